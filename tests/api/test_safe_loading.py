"""champion.json arrives by pull request: no edit of it can make the server run code.

Each case writes a pickle whose __reduce__ would create a marker file, names it from
champion.json with its correct sha256, and checks that the server refuses it with a
reason and the marker never appears (the old code unpickled it before /ready answered).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from churn import modelfile, registry
from churn.errors import ChurnError
from churn.serve import create_app
from tests.api.conftest import settings


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def evil_pickle(marker: Path) -> bytes:
    return pickle.dumps(Payload(marker))


@pytest.fixture
def registry_copy(tmp_path, in_served) -> Path:
    target = tmp_path / "registry" / "streamflow-churn"
    shutil.copytree(in_served / "registry" / "streamflow-churn", target)
    return target


def ready_reason(registry_dir: Path) -> str:
    with TestClient(create_app(settings(registry_dir=registry_dir))) as c:
        ready = c.get("/ready")
        assert ready.status_code == 503
        return ready.json()["reason"]


def rewrite(registry_dir: Path, **fields) -> None:
    path = registry_dir / "champion.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def test_a_free_artifact_path_is_refused_and_nothing_runs(tmp_path, registry_copy):
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.joblib"
    evil.write_bytes(evil_pickle(marker))
    rewrite(registry_copy, artifact_path=str(evil),
            sha256=hashlib.sha256(evil.read_bytes()).hexdigest())  # fmt: skip
    reason = ready_reason(registry_copy)
    assert "artifact_path" in reason and "content-store path" in reason
    assert not marker.exists()


def test_a_pickle_in_the_content_store_with_a_matching_sha_is_refused(tmp_path, registry_copy):
    marker = tmp_path / "pwned"
    data = evil_pickle(marker)
    sha = hashlib.sha256(data).hexdigest()
    entry = json.loads((registry_copy / "champion.json").read_text())
    store = registry.store_path(sha)
    store.parent.mkdir(parents=True, exist_ok=True)
    store.write_bytes(data)
    shutil.copy(registry.contract_file(entry), store.parent / registry.CONTRACT_FILE)
    rewrite(registry_copy, sha256=sha, artifact_path=str(store),
            contract_path=str(store.parent / registry.CONTRACT_FILE))  # fmt: skip
    reason = ready_reason(registry_copy)
    assert "not a skops model file" in reason and "refused" in reason
    assert not marker.exists()
    with pytest.raises(ChurnError, match="refused"):  # rollback and promote load the same way
        modelfile.load(store)
    assert not marker.exists()


def test_a_skops_file_naming_an_untrusted_callable_is_refused(tmp_path):
    import skops.io

    path = tmp_path / "model.skops"
    skops.io.dump({"call": os.system}, path)
    with pytest.raises(ChurnError, match=r"refused to load.*system"):
        modelfile.load(path)


@pytest.mark.parametrize(
    "field,value",
    [("sha256", "../../etc/passwd"), ("sha256", "A" * 64), ("run_id", "x/../../y"),
     ("version", "1; rm -rf /"), ("contract_path", "/etc/passwd")],
)  # fmt: skip
def test_malformed_fields_are_refused_naming_the_field(field, value, registry_copy):
    rewrite(registry_copy, **{field: value})
    reason = ready_reason(registry_copy)
    assert f"'{field}'" in reason


def test_the_registry_model_loads_through_skops_only(in_served):
    entry = json.loads((in_served / "registry" / "streamflow-churn" / "champion.json").read_text())
    path = Path(entry["artifact_path"])
    assert path.name == "model.skops" and path.read_bytes()[:2] == b"PK"  # a zip, no pickle
    model = modelfile.load(path)
    assert hasattr(model, "predict_proba")
