"""Train → promote → rollback against a real `mlflow server` process (SQLite backend,
127.0.0.1, free port), unchanged code: only MLFLOW_TRACKING_URI differs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from churn import drift, evaluate, ingest, prepare, promote, registry, train
from churn.io import sha256_file
from tests.conftest import small_params
from tests.helpers import free_port, wait_until_ok

pytestmark = pytest.mark.slow

NAME = "streamflow-churn"


def start_server(root: Path, port: int, log) -> subprocess.Popen:
    mlflow = Path(sys.executable).parent / "mlflow"
    command = [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
               "--artifacts-destination", str(root / "artifacts")]  # fmt: skip
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.Popen(command, cwd=root, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    with open(root / "server.log", "w") as log:
        proc = start_server(root, port, log)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_ok(f"{url}/health", proc, root / "server.log", 180)
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def trainer(server, tmp_path_factory):
    """A machine that trained and promoted twice against the server (weak, then strong)."""
    root = tmp_path_factory.mktemp("trainer")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", server)
        weak = small_params(**{"ingest.synthetic.n_users": 600, "train.hist_gb.max_iter": 10,
                               "train.hist_gb.max_leaf_nodes": 2})  # fmt: skip
        strong = small_params(**{"ingest.synthetic.n_users": 600})
        ingest.run(strong)
        prepare.run(strong)
        for p in (weak, strong):
            train.run(p)
            evaluate.run(p)
            drift.run(p)
            assert promote.run(p)["decision"] == "promote"
    return root


def test_train_promote_rollback_against_a_tracking_server(server, trainer, tmp_path, monkeypatch):
    monkeypatch.chdir(trainer)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=server)
    assert client.get_model_version_by_alias(NAME, "champion").version == "2"
    import mlflow.pyfunc

    served = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")  # the registry's source loads
    assert served.metadata.run_id == registry.read_champion()["run_id"]
    # a later month's online table, as a newer promote would have published it: the
    # rolled-back champion must be served with it, not with its own month's
    published = registry.online_dir(registry.REGISTRY_DIR) / registry.ONLINE_FILES[0]
    pd.read_parquet(published).iloc[:500].to_parquet(published)
    registry.rollback(NAME, None, "integration test")
    shared = registry.fetch_online(registry.read_champion(), tmp_path / "online")
    assert len(pd.read_parquet(shared)) == 500
    assert client.get_model_version_by_alias(NAME, "champion").version == "1"
    assert registry.read_champion()["version"] == "1"

    # the artifact comes back from the server when the local store lost it
    shutil.rmtree("mlflow/models")
    path = registry.verified_artifact(registry.read_champion())
    assert path.is_file()
    assert registry.verify(NAME) == []


def test_a_clone_that_never_trained_serves_the_champion_from_the_server(
    server, trainer, tmp_path, monkeypatch
):
    """What a second machine has: the committed registry/ and the server's URI. Model,
    contract and online features come through the artifact proxy, sha256-checked (the
    old code fetched only the model, then stopped at the absent contract)."""
    from fastapi.testclient import TestClient

    from churn.serve import Settings, create_app

    clone = tmp_path / "clone"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    published = trainer / registry.online_dir(registry.REGISTRY_DIR) / registry.ONLINE_FILES[0]
    users = len(pd.read_parquet(published))  # what the champion's run holds on the server
    champion = registry.read_champion(trainer / "registry" / NAME)  # whichever is champion now
    shutil.copytree(trainer / "registry", clone / "registry")  # git's part, nothing else
    monkeypatch.chdir(clone)
    for source in ("file", "alias"):
        settings = Settings.from_env()
        with TestClient(
            create_app(Settings(**{**settings.__dict__, "champion_from": source}))
        ) as c:
            assert c.get("/ready").status_code == 200, c.get("/ready").json()
            model = c.get("/model").json()
            assert (model["sha256"], model["version"]) == (champion["sha256"], champion["version"])
            assert model["n_online_users"] == users and model["champion_from"] == source
            assert c.post("/predict", json={"user_id": "SF-0000001"}).status_code == 200
    fetched = clone / registry.store_path(champion["sha256"])
    assert sha256_file(fetched) == champion["sha256"]
    assert (clone / registry.contract_file(champion)).is_file()
    assert not (clone / "mlflow" / "online").exists()  # read from the server, not published
