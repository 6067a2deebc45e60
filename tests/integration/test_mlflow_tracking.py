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
    params = small_params(**{"ingest.synthetic.n_users": 600, "mlflow.experiment": "t",
                             "train.model": "auto"})  # fmt: skip
    ingest.run(params)
    prepare.run(params)
    train.run(params)
    metrics = evaluate.run(params)

    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    logged = mlflow.search_runs(experiment_names=["t"], output_format="list")
    runs = [r for r in logged if "mlflow.parentRunId" not in r.data.tags]
    assert len(runs) == 1
    run = runs[0]
    # train.model: auto (the default): one child run per candidate, with its CV score
    children = [r for r in logged if r.data.tags.get("mlflow.parentRunId") == run.info.run_id]
    summary = json.loads(Path("models/training.json").read_text())
    assert len(children) == len(summary["search"]["candidates"]) >= 5
    assert all(0.5 < c.data.metrics["roc_auc_cv_mean"] <= 1.0 for c in children)
    tags = run.data.tags
    assert tags["model_sha256"] == sha256_file("models/model.skops")
    assert tags["data_sha256"] == sha256_file("data/prepared/train.parquet")
    assert tags["as_of"] == "2024-01-31" and tags["dvc_exp_name"] == "tiny-exp"
    assert run.info.run_name == "tiny-exp"
    assert "git_commit" in tags
    assert run.data.params["model_param"] == "auto"
    assert run.data.params["model"] == tags["model"] == summary["model"]
    assert any(key.startswith(f"{summary['model']}.") for key in run.data.params)
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


def test_registered_versions_keep_the_lineages_numbers_in_a_fresh_store(workdir: Path):
    """A clone's empty MLflow store must call the committed version 2 "2", not "1"
    (placeholders lift the number and are deleted); later versions follow on."""
    import mlflow

    from churn import tracking

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment("numbers")
    from sklearn.linear_model import LogisticRegression

    tiny = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    with mlflow.start_run() as run:
        info = mlflow.sklearn.log_model(tiny, name="model", pip_requirements=[],
                                        serialization_format="skops")  # fmt: skip
        mlflow.set_tag(tracking.LOGGED_MODEL_TAG, info.model_uri)
    assert tracking.register_version("lineage", run.info.run_id, {"k": "a"}, at_least=3) == "3"
    client = mlflow.MlflowClient()
    left = sorted(int(v.version) for v in client.search_model_versions("name = 'lineage'"))
    assert left == [3]
    assert tracking.register_version("lineage", run.info.run_id, {"k": "b"}, at_least=2) == "4"
