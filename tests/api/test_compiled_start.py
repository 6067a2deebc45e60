"""A linear champion starts from compiled.json: no sklearn import, the Pipeline's scores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from churn import drift, evaluate, ingest, prepare, promote, registry, train
from churn.fastpath import COMPILED_FILE
from churn.serve import create_app
from tests.api.conftest import settings, stages_in
from tests.conftest import small_params

# what a second start loads, printed by a fresh interpreter
PROBE = """
import json, sys
from churn.serving.loading import load_bundle
from churn.serving.settings import Settings
bundle = load_bundle(Settings())
served = bundle.champion
row = bundle.row_of[sys.argv[1]]
score = float(served.compiled.predict_transformed(served.transformed[row : row + 1])[0])
print(json.dumps({"sklearn": "sklearn" in sys.modules, "scipy": "scipy" in sys.modules,
                  "source": served.runtime["source"], "score": score}))
"""


LINEAR = {"ingest.synthetic.n_users": 800, "train.model": "logistic_regression"}


@pytest.fixture(scope="module")
def linear_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("linear")
    with stages_in(root):
        p = small_params(**LINEAR)
        for stage in (ingest, prepare, train, evaluate, drift, promote):
            stage.run(p)
    return root


def _served(root: Path) -> tuple[dict, Path]:
    entry = registry.read_champion(root / registry.REGISTRY_DIR)
    return entry, root / registry.store_path(entry["sha256"]).parent / COMPILED_FILE


def _second_start(root: Path, user_id: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, user_id], cwd=root, text=True,
                         capture_output=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_first_start_writes_compiled_json_and_the_next_needs_no_sklearn(
    linear_dir, monkeypatch
):
    monkeypatch.chdir(linear_dir)
    entry, compiled = _served(linear_dir)
    compiled.unlink(missing_ok=True)
    with TestClient(create_app(settings())) as c:
        runtime = c.get("/model").json()["runtime"]
        assert runtime["name"] == "numpy" and runtime["source"] == "pipeline"
        user_id = _first_user(linear_dir)
        first = c.post("/predict", json={"user_id": user_id}).json()["churn_probability"]
    assert json.loads(compiled.read_text())["model_sha256"] == entry["sha256"]
    second = _second_start(linear_dir, user_id)
    assert second["source"] == COMPILED_FILE
    assert second["sklearn"] is False and second["scipy"] is False
    assert round(second["score"], 6) == first  # the API answers 6 digits


def test_a_compiled_json_that_does_not_match_its_model_is_ignored_and_rewritten(
    linear_dir, monkeypatch, caplog
):
    monkeypatch.chdir(linear_dir)
    _, compiled = _served(linear_dir)
    with TestClient(create_app(settings())):
        pass  # makes sure the file exists
    payload = json.loads(compiled.read_text())
    payload["linear"]["intercept"] += 0.5
    compiled.write_text(json.dumps(payload))
    with TestClient(create_app(settings())) as c:
        assert c.get("/model").json()["runtime"]["source"] == "pipeline"
    assert "> 1e-09; loading the Pipeline instead" in caplog.text
    assert json.loads(compiled.read_text())["linear"]["intercept"] != payload["linear"]["intercept"]
    assert _second_start(linear_dir, _first_user(linear_dir))["source"] == COMPILED_FILE


def _first_user(root: Path) -> str:
    import pandas as pd

    return str(pd.read_parquet(root / "data/prepared/online_features.parquet")["user_id"].iloc[0])


def test_promote_writes_compiled_json_so_even_the_first_start_needs_no_sklearn(
    linear_dir, monkeypatch
):
    monkeypatch.chdir(linear_dir)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{linear_dir / 'mlflow.db'}")
    entry, compiled = _served(linear_dir)
    compiled.unlink(missing_ok=True)
    promote.run(small_params(**LINEAR))  # the champion again: restored, compiled.json written
    assert json.loads(compiled.read_text())["model_sha256"] == entry["sha256"]
    start = _second_start(linear_dir, _first_user(linear_dir))
    assert start["source"] == COMPILED_FILE and start["sklearn"] is False
