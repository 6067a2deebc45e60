"""train + evaluate against a real MLflow SQLite store: the run, its tags, metrics and model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from churn import evaluate, ingest, modelfile, prepare, train
from churn.io import sha256_file
from tests.conftest import small_params

pytestmark = pytest.mark.slow


def test_train_run_is_logged_and_evaluate_adds_metrics(workdir: Path, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "tiny-exp")
    params = small_params(**{"ingest.synthetic.n_users": 600, "mlflow.experiment": "t"})
    ingest.run(params)
    prepare.run(params)
    train.run(params)
    metrics = evaluate.run(params)

    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["t"], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    tags = run.data.tags
    assert tags["model_sha256"] == sha256_file("models/model.skops")
    assert tags["data_sha256"] == sha256_file("data/prepared/train.parquet")
    assert tags["as_of"] == "2024-01-31" and tags["dvc_exp_name"] == "tiny-exp"
    assert run.info.run_name == "tiny-exp"
    assert "git_commit" in tags
    assert run.data.params["hist_gb.max_iter"] == "100"
    assert run.data.metrics["roc_auc"] == pytest.approx(metrics["roc_auc"])

    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    test = pd.read_parquet("data/prepared/test.parquet").head(5)
    features = [f["name"] for f in json.loads(Path("data/prepared/features.json").read_text())[
        "features"]]  # fmt: skip
    logged = model.predict(test[features])
    local = modelfile.load("models/model.skops").predict_proba(test[features])
    assert logged.shape == (5, 2)
    assert (abs(logged - local) < 1e-12).all()
    assert model.metadata.signature is not None
