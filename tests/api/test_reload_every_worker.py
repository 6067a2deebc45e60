"""A reload reaches every worker: two apps sharing one run dir stand in for two uvicorn
workers (tests/integration/test_serving_process.py does it with real processes)."""

from __future__ import annotations

import json
import shutil

from fastapi.testclient import TestClient

from churn.serve import challenger_entry, create_app
from tests.api.conftest import TOKEN, settings

AUTH = {"authorization": f"Bearer {TOKEN}"}


def test_one_reload_moves_every_worker(tmp_path, in_served):
    registry_copy = tmp_path / "registry" / "streamflow-churn"
    shutil.copytree(in_served / "registry" / "streamflow-churn", registry_copy)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shared = settings(registry_dir=registry_copy, run_dir=run_dir)
    with TestClient(create_app(shared)) as first, TestClient(create_app(shared)) as second:
        ids = [f"SF-{i:07d}" for i in range(1, 51)]
        assert {second.post("/predict", json={"user_id": u}).json()["model_version"]
                for u in ids} == {"1"}  # fmt: skip
        champion = json.loads((registry_copy / "champion.json").read_text())
        promoted = {**challenger_entry(shared, champion), "alias": "champion"}
        (registry_copy / "champion.json").write_text(json.dumps(promoted))

        assert first.post("/admin/reload", headers=AUTH).json()["model_version"] == "2"
        versions = [second.post("/predict", json={"user_id": u}).json()["model_version"]
                    for u in ids]  # fmt: skip
        assert set(versions) == {"2"}  # the worker that got no reload follows the announcement
        assert second.get("/model").json()["version"] == "2"
        text = second.get("/metrics").text
        assert 'churn_reloads_total{result="ok"} 1.0' in text  # followed once, not per request


def test_without_a_run_dir_nothing_is_announced(tmp_path, in_served):
    registry_copy = tmp_path / "registry" / "streamflow-churn"
    shutil.copytree(in_served / "registry" / "streamflow-churn", registry_copy)
    with TestClient(create_app(settings(registry_dir=registry_copy))) as client:
        assert client.post("/admin/reload", headers=AUTH).status_code == 200
    assert not list(tmp_path.glob("**/reload.json"))
