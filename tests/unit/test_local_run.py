"""The run id serving names: the run of this tracking store holding the champion's bytes
(promote and rollback note it), champion.json's own when nothing was noted here."""

from __future__ import annotations

import json

from churn import registry

SHA = "ab" * 32
ENTRY = {"sha256": SHA, "run_id": "1" * 32}


def test_the_noted_run_of_this_store_is_named_else_champion_jsons(workdir, monkeypatch):
    assert registry.local_run_id(ENTRY) == ENTRY["run_id"]  # nothing noted
    registry.record_local_run(SHA, "2" * 32)
    assert registry.local_run_id(ENTRY) == "2" * 32
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert registry.local_run_id(ENTRY) == ENTRY["run_id"]  # another store: not its run
    registry.record_local_run(SHA, "3" * 32)
    assert registry.local_run_id(ENTRY) == "3" * 32
    runs = json.loads((registry.store_path(SHA).parent / registry.RUNS_FILE).read_text())
    assert sorted(runs.values()) == ["2" * 32, "3" * 32]  # one run per store


def test_a_malformed_note_is_ignored(workdir):
    path = registry.store_path(SHA).parent / registry.RUNS_FILE
    path.parent.mkdir(parents=True)
    for text in ("not json", "[1]", json.dumps({"x": "../../etc"})):
        path.write_text(text)
        assert registry.local_run_id(ENTRY) == ENTRY["run_id"]
    registry.record_local_run(SHA, "not-a-run-id")
    assert registry.local_run_id(ENTRY) == ENTRY["run_id"]
