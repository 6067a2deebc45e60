"""CHURN_CHAMPION_FROM=alias: a replica serves what the tracking store's `champion` alias
names, follows it on reload, and refuses a version whose tags a hand could have edited."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from churn import registry, tracking
from churn.errors import ChurnError
from churn.serve import Settings, create_app
from tests.api.conftest import TOKEN, settings

NAME = "streamflow-churn"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def store(in_served, monkeypatch):
    uri = f"sqlite:///{in_served / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # the URI named, not read: mlflow keeps the last set_tracking_uri of this process (an
    # earlier test's store when the test files run in another order, as with pytest -n 2)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    return client


@contextmanager
def alias_at(client: MlflowClient, version: str):
    try:
        client.set_registered_model_alias(NAME, "champion", version)
        yield
    finally:  # the served registry is shared by the session's tests
        client.set_registered_model_alias(NAME, "champion", "1")


def alias_settings() -> Settings:
    online = registry.online_dir(registry.REGISTRY_DIR) / registry.ONLINE_FILES[0]
    return settings(champion_from="alias", features_path=online)


def test_alias_mode_serves_and_follows_the_alias_not_the_file(store):
    champion_file = registry.read_champion()
    with TestClient(create_app(alias_settings())) as c:
        assert c.get("/model").json()["version"] == "1"
        with alias_at(store, "2"):  # another machine promoted version 2
            answer = c.post("/admin/reload", headers=AUTH)
            assert answer.status_code == 200 and answer.json()["model_version"] == "2"
            model = c.get("/model").json()
            v2 = store.get_model_version(NAME, "2").tags[tracking.MODEL_SHA_TAG]
            assert model["sha256"] == v2 and model["champion_from"] == "alias"
            assert c.post("/predict", json={"user_id": "SF-0000001"}).json()["model_version"] == "2"
    assert registry.read_champion() == champion_file  # the file was only read, never written


def test_a_tampered_version_tag_is_refused_and_the_served_model_kept(store):
    with TestClient(create_app(alias_settings())) as c:
        good = store.get_model_version(NAME, "2").tags[tracking.MODEL_SHA_TAG]
        try:
            store.set_model_version_tag(NAME, "2", tracking.MODEL_SHA_TAG, "../../../etc/passwd")
            with alias_at(store, "2"):
                failed = c.post("/admin/reload", headers=AUTH)
                assert failed.status_code == 409
                assert "no valid model_sha256 tag" in failed.json()["detail"]
                assert c.get("/model").json()["version"] == "1"
        finally:
            store.set_model_version_tag(NAME, "2", tracking.MODEL_SHA_TAG, good)


def test_polling_follows_the_alias(store):
    import time

    with (
        TestClient(create_app(Settings(**{**alias_settings().__dict__, "poll_seconds": 0.2}))) as c,
        alias_at(store, "2"),
    ):
        deadline = time.monotonic() + 120  # generous: the suite shares the CPU
        while c.get("/model").json()["version"] != "2":
            assert time.monotonic() < deadline, "the poller never followed the alias"
            time.sleep(0.1)


def test_an_unknown_champion_source_is_refused():
    with pytest.raises(ChurnError, match="CHURN_CHAMPION_FROM='git'"):
        Settings(champion_from="git")
