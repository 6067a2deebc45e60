"""A linear champion starts from compiled.json: no sklearn import, the Pipeline's scores."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from churn import drift, evaluate, ingest, prepare, promote, registry, train
from churn.fastpath import COMPILED_FILE, linear_scorer, read_compiled
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
rows = served.rows(bundle.online.find([sys.argv[1]]))
score = float(served.compiled.predict_transformed(rows)[0])
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


def test_a_compiled_json_promote_did_not_record_is_never_used(linear_dir, monkeypatch):
    """compiled.json is promote's: serve neither trusts nor writes one whose sha256 the
    champion does not record (a file serve wrote would be trusted on the next start)."""
    monkeypatch.chdir(linear_dir)
    entry, compiled = _served(linear_dir)
    assert entry["compiled_sha256"] == hashlib.sha256(compiled.read_bytes()).hexdigest()
    kept = compiled.read_bytes()
    compiled.unlink()
    try:
        with TestClient(create_app(settings())) as c:
            runtime = c.get("/model").json()["runtime"]
            assert runtime["name"] == "numpy" and runtime["source"] == "pipeline"
        assert not compiled.exists()
        registry_copy = linear_dir / "unrecorded" / "registry" / "streamflow-churn"
        shutil.copytree(linear_dir / registry.REGISTRY_DIR, registry_copy, dirs_exist_ok=True)
        unrecorded = {**entry, "compiled_sha256": None}
        (registry_copy / "champion.json").write_text(json.dumps(unrecorded))
        compiled.write_bytes(kept)
        with TestClient(create_app(settings(registry_dir=registry_copy))) as c:
            assert c.get("/model").json()["runtime"]["source"] == "pipeline"
    finally:
        compiled.write_bytes(kept)


def _forge(compiled: Path, entry: dict, shift: float) -> dict:
    """Edit compiled.json as an attacker who understands it: a new intercept and check
    scores recomputed to match it, so its own 1e-9 check passes."""
    model, _, _ = read_compiled(compiled, entry["sha256"], entry["compiled_sha256"])
    payload = json.loads(compiled.read_text())
    check = payload["check"]
    num = np.array([[np.nan if v is None else v for v in row] for row in check["num"]],
                   dtype="float64")  # fmt: skip
    cat = np.array(check["cat"], dtype=object).reshape(len(num), -1)
    payload["linear"]["intercept"] += shift
    payload["check"]["scores"] = linear_scorer(payload["linear"])(
        model.transform(num, cat)
    ).tolist()
    compiled.write_text(json.dumps(payload))
    return payload


def test_a_forged_compiled_json_with_matching_check_scores_is_refused(linear_dir, monkeypatch):
    monkeypatch.chdir(linear_dir)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{linear_dir / 'mlflow.db'}")
    entry, compiled = _served(linear_dir)
    kept = compiled.read_bytes()
    user_id = _first_user(linear_dir)
    with TestClient(create_app(settings())) as c:
        assert c.get("/model").json()["runtime"]["source"] == COMPILED_FILE
        honest = c.post("/predict", json={"user_id": user_id}).json()["churn_probability"]
    try:
        _forge(compiled, entry, 2.0)
        forged_sha = hashlib.sha256(compiled.read_bytes()).hexdigest()
        _, diff, _ = read_compiled(compiled, entry["sha256"], forged_sha)
        assert diff < 1e-9  # consistent: the old check (scores only) took it
        with TestClient(create_app(settings())) as c:
            assert c.get("/model").json()["runtime"]["source"] == "pipeline"
            served = c.post("/predict", json={"user_id": user_id}).json()["churn_probability"]
        assert served == honest  # the Pipeline's answer, not the forged one
        problems = registry.verify(entry["model_name"], root=linear_dir / registry.REGISTRY_DIR)
        assert any("edited after promote" in p for p in problems), problems
    finally:
        compiled.write_bytes(kept)
    assert registry.verify(entry["model_name"], root=linear_dir / registry.REGISTRY_DIR) == []


def test_a_pickle_in_the_store_is_refused_though_its_compiled_json_matches(linear_dir, monkeypatch):
    """champion.json and the store agree on a pickle and a crafted compiled.json: the
    start still refuses the version (the model file is not a trusted skops file)."""
    monkeypatch.chdir(linear_dir)
    entry, compiled = _served(linear_dir)
    data = pickle.dumps({"a": 1})
    sha = hashlib.sha256(data).hexdigest()
    store = registry.store_path(sha)
    store.parent.mkdir(parents=True)
    try:
        store.write_bytes(data)
        shutil.copy(compiled.parent / registry.CONTRACT_FILE, store.parent)
        crafted = {**json.loads(compiled.read_text()), "model_sha256": sha}
        (store.parent / COMPILED_FILE).write_text(json.dumps(crafted))
        registry_copy = linear_dir / "pickled" / "registry" / "streamflow-churn"
        registry_copy.mkdir(parents=True, exist_ok=True)
        forged = {**entry, "sha256": sha, "artifact_path": str(store),
                  "contract_path": str(store.parent / registry.CONTRACT_FILE),
                  "compiled_sha256": hashlib.sha256(
                      (store.parent / COMPILED_FILE).read_bytes()).hexdigest()}  # fmt: skip
        (registry_copy / "champion.json").write_text(json.dumps(forged))
        with TestClient(create_app(settings(registry_dir=registry_copy))) as c:
            ready = c.get("/ready")
        assert ready.status_code == 503
        assert "not a skops model file" in ready.json()["reason"], ready.json()
    finally:
        shutil.rmtree(store.parent)


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


def test_a_rollback_brings_back_the_compiled_json_its_version_was_promoted_with(
    linear_dir, monkeypatch
):
    monkeypatch.chdir(linear_dir)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{linear_dir / 'mlflow.db'}")
    first, _ = _served(linear_dir)
    other = small_params(**LINEAR, **{"train.logistic_regression.C": 0.05,
                                      "promote.margin": -1.0})  # fmt: skip
    for stage in (train, evaluate, drift, promote):
        stage.run(other)
    second, _ = _served(linear_dir)
    assert second["version"] != first["version"] and second["compiled_sha256"]
    try:
        back = registry.rollback(first["model_name"], first["version"], "test")
        assert back["compiled_sha256"] == first["compiled_sha256"]
        last = registry.read_history(linear_dir / registry.REGISTRY_DIR)[-1]
        assert last["action"] == "rollback" and last["compiled_sha256"] == first["compiled_sha256"]
        start = _second_start(linear_dir, _first_user(linear_dir))
        assert start["source"] == COMPILED_FILE and start["sklearn"] is False
    finally:
        for stage in (train, evaluate, drift):  # the module's later tests see the first model
            stage.run(small_params(**LINEAR))
