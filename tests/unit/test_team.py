"""churn.team without servers: what push/pull move, and refusals before anything starts."""

from __future__ import annotations

import socket

import pytest

from churn import team
from churn.errors import ChurnError

DVC_YAML = """
stages:
  prepare:
    cmd: x
    outs:
      - data/prepared
  evaluate:
    cmd: y
    metrics:
      - reports/metrics.json:
          cache: false
    outs:
      - reports/plots:
          cache: false
      - reports/drift.html
"""
DVC_LOCK = """
schema: '2.0'
stages:
  prepare:
    outs:
    - path: data/prepared
      hash: md5
      md5: 0123.dir
      size: 2500000
      nfiles: 8
  evaluate:
    outs:
    - path: reports/metrics.json
      md5: aa
      size: 900
    - path: reports/plots
      md5: bb.dir
      size: 40000
      nfiles: 7
    - path: reports/drift.html
      md5: cc
      size: 4480000
"""


def test_push_and_pull_count_only_the_cached_outputs(tmp_path):
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    (tmp_path / "dvc.lock").write_text(DVC_LOCK)
    outs = team.cached_outputs(tmp_path)
    assert [o["path"] for o in outs] == ["data/prepared", "reports/drift.html"]
    assert team.describe(outs) == "2 outputs, 9 files, 7.0 MB"


def test_a_taken_port_is_refused_before_anything_starts(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ChurnError, match=f"127.0.0.1:{port} is already in use"):
            team.up(tmp_path / "team", port=port, pg_port=port)
    assert not (tmp_path / "team" / "pg").exists()  # no initdb ran


def test_postgres_commands_run_as_postgres_only_for_root(monkeypatch):
    monkeypatch.setattr(team.os, "geteuid", lambda: 0)
    assert team.as_postgres(["initdb", "-D", "x"])[:4] == ["runuser", "-u", "postgres", "--"]
    monkeypatch.setattr(team.os, "geteuid", lambda: 1000)
    assert team.as_postgres(["initdb", "-D", "x"]) == ["initdb", "-D", "x"]


def test_waiting_for_a_dead_server_names_its_log(tmp_path):
    log = tmp_path / "mlflow.log"
    log.write_text("line 1\nERROR: could not connect to PostgreSQL\n")
    with pytest.raises(ChurnError, match="exited; its log") as raised:
        team.wait_healthy("http://127.0.0.1:9", 30, alive=lambda: False, log_path=log)
    assert "could not connect to PostgreSQL" in str(raised.value)
