"""The experiment workflow of the README: a queued grid (`dvc exp run --queue -S a,b` then
`dvc queue start`), `dvc exp show --md`, `dvc exp apply`, MLflow runs named after the
experiments in the repo's own store, and no experiment ever moving the champion."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import HISTORY_JSONL, LINEAGE
from tests.helpers import BIN, dvc, make_repo, ran_stages, sh

pytestmark = pytest.mark.slow


def registry_state(repo: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((repo / LINEAGE).glob("*.json*"))}


def mlflow_runs(repo: Path) -> dict[str, dict]:
    """Run name -> tags and metrics, read straight from the SQLite store."""
    with sqlite3.connect(repo / "mlflow" / "mlflow.db") as db:
        names = db.execute("select run_uuid, name from runs").fetchall()
        tags = db.execute("select run_uuid, key, value from tags").fetchall()
        metrics = db.execute("select run_uuid, key, value from latest_metrics").fetchall()
    runs = {uuid: {"tags": {}, "metrics": {}} for uuid, _ in names}
    for uuid, key, value in tags:
        runs[uuid]["tags"][key] = value
    for uuid, key, value in metrics:
        runs[uuid]["metrics"][key] = value
    return {name: runs[uuid] for uuid, name in names}


def wait_for_queue(repo: Path, timeout_s: float = 600) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        status = dvc(repo, "queue", "status").stdout
        if not any(word in status for word in ("Queued", "Running")):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"queue still busy after {timeout_s} s:\n{status}")
        time.sleep(2)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = make_repo(tmp_path_factory.mktemp("exp-repo"), n_users=800, n_months=2)
    dvc(repo, "repro")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "baseline")
    return repo


@pytest.fixture(scope="module")
def grid(repo) -> list[str]:
    """Two queued experiments over max_leaf_nodes, run by a queue worker."""
    before = registry_state(repo)
    dvc(repo, "exp", "run", "--queue", "-S", "train.hist_gb.max_leaf_nodes=3,12")
    dvc(repo, "queue", "start")
    status = wait_for_queue(repo)
    assert status.count("Success") == 2, status
    assert registry_state(repo) == before  # queued experiments never move the champion
    names = dvc(repo, "exp", "ls", "--name-only").stdout.split()
    assert len(names) == 2
    return names


def test_queued_runs_log_to_the_repos_mlflow_store_under_their_experiment_names(repo, grid):
    runs = mlflow_runs(repo)
    for name in grid:
        assert name in runs, f"{name} not in {sorted(runs)}"  # not in the queue's temp copy
        assert runs[name]["tags"]["dvc_exp_name"] == name
        assert 0.5 < runs[name]["metrics"]["roc_auc"] <= 1.0  # evaluate found the run
    leaves = {runs[name]["tags"].get("mlflow.runName") for name in grid}
    assert leaves == set(grid)


def test_exp_show_md_lists_the_grid_with_its_param_and_metrics(repo, grid):
    table = dvc(repo, "exp", "show", "--md", "--no-pager").stdout
    header = table.splitlines()[0]
    assert "roc_auc" in header and "train.hist_gb.max_leaf_nodes" in header
    rows = [line for line in table.splitlines() if any(f"[{n}]" in line for n in grid)]
    assert len(rows) == 2
    values = {cell.strip() for row in rows for cell in row.split("|")}
    assert {"3", "12"} <= values


def test_exp_apply_brings_params_and_metrics_and_promote_then_decides(repo, grid):
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    experiments = {
        e["name"]: e["revs"][0]["data"] for entry in shown for e in (entry.get("experiments") or [])
    }
    name = grid[0]
    data = experiments[name]
    expected_leaves = data["params"]["params.yaml"]["data"]["train"]["hist_gb"]["max_leaf_nodes"]
    expected_auc = data["metrics"]["reports/metrics.json"]["data"]["roc_auc"]
    before = registry_state(repo)
    dvc(repo, "exp", "apply", name)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["train"]["hist_gb"]["max_leaf_nodes"] == expected_leaves
    assert json.loads((repo / "reports/metrics.json").read_text())["roc_auc"] == expected_auc
    assert json.loads((repo / "reports/promotion.json").read_text())["mode"] == "experiment"
    assert registry_state(repo) == before
    # promoting an applied experiment is a deliberate step outside the experiment
    dvc(repo, "repro", "-f", "-s", "promote")
    decision = json.loads((repo / "reports/promotion.json").read_text())
    assert decision["mode"] == "apply" and decision["decision"] in ("promote", "skip")
    history = (repo / HISTORY_JSONL).read_text().splitlines()
    assert len(history) == len(before["history.jsonl"].splitlines()) + 1
    assert json.loads(history[-1])["action"] == decision["decision"]
    sh(repo, str(BIN / "churn"), "registry", "verify")


def test_exp_run_with_the_auto_model_and_a_fixed_threshold(repo):
    """A workspace `dvc exp run`: `-S train.model=auto` makes the search's candidates MLflow
    child runs of the experiment's run, `-S train.threshold=0.4` replaces the money-chosen
    threshold; the stages from train on run, promote decides in experiment mode, the
    champion does not move and `dvc exp show` lists the run."""
    before = registry_state(repo)
    assert training_threshold_mode(repo) == "auto"
    result = dvc(repo, "exp", "run", "-n", "auto-model", "-S", "train.model=auto", "-S",
                 "train.threshold=0.4")  # fmt: skip
    assert ran_stages(result) == ["train", "evaluate", "drift", "promote"]
    training = json.loads((repo / "models/training.json").read_text())
    assert training["search"]["winner"] and len(training["search"]["candidates"]) >= 5
    runs = mlflow_runs(repo)
    children = [r for r in runs.values() if r["tags"].get("mlflow.parentRunId")
                and "roc_auc_cv_mean" in r["metrics"]]  # fmt: skip
    parent = runs["auto-model"]
    assert len(children) == len(training["search"]["candidates"])
    assert {c["tags"]["mlflow.parentRunId"] for c in children} <= {
        uuid for uuid in _run_ids(repo, "auto-model")
    }
    assert parent["tags"]["model"] == training["model"]
    contract = json.loads((repo / "models/feature_contract.json").read_text())
    assert contract["threshold"] == 0.4 and training_threshold_mode(repo) == "fixed"
    assert json.loads((repo / "reports/evaluation.json").read_text())["threshold"] == 0.4
    assert json.loads((repo / "reports/promotion.json").read_text())["mode"] == "experiment"
    assert registry_state(repo) == before  # experiments never move the champion
    shown = json.dumps(json.loads(dvc(repo, "exp", "show", "--json").stdout))
    assert "auto-model" in shown and '"threshold": 0.4' in shown
    sh(repo, "git", "checkout", "--", ".")
    dvc(repo, "checkout", "-f")


def training_threshold_mode(repo: Path) -> str:
    return json.loads((repo / "models/training.json").read_text())["threshold"]["mode"]


def _run_ids(repo: Path, name: str) -> set[str]:
    with sqlite3.connect(repo / "mlflow" / "mlflow.db") as db:
        return {row[0] for row in db.execute("select run_uuid from runs where name = ?", (name,))}
