"""The CI workflow's steps, run here as the workflow runs them (scripts/ci/*)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CHAMPION_JSON, REPO_ROOT
from tests.helpers import BIN, dvc, env, make_repo, set_param, sh

pytestmark = pytest.mark.slow

CI = REPO_ROOT / "scripts" / "ci"


@pytest.fixture
def reviewed(tmp_path) -> Path:
    """A repo whose main holds this project's committed metrics; the workspace is a change
    that lowers pr_auc beyond its tolerance and raises the learning rate."""
    repo = tmp_path / "repo"
    (repo / "reports").mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", "reports/metrics.json", "reports/drift.json"):
        shutil.copy(REPO_ROOT / name, repo / name)
    sh(repo, "git", "init", "-q", "-b", "main")
    dvc(repo, "init", "-q")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "main")
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    metrics["pr_auc"] = round(metrics["pr_auc"] - 0.05, 6)
    (repo / "reports/metrics.json").write_text(json.dumps(metrics, indent=2))
    sh(repo, str(BIN / "churn"), "params", "set", "train.hist_gb.learning_rate=0.1")
    return repo


def test_pr_report_shows_metrics_params_and_the_gate(reviewed):
    result = sh(reviewed, "bash", str(CI / "pr-report"), "main", "out/report.md")
    report = (reviewed / "out/report.md").read_text()
    assert result.stdout == report
    assert report.startswith("## StreamFlow churn against `main`")
    metric_rows = [line for line in report.splitlines() if "| pr_auc " in line]
    committed = json.loads((REPO_ROOT / "reports/metrics.json").read_text())["pr_auc"]
    old, new = f"{committed:.5g}", f"{committed - 0.05:.5g}"  # dvc prints 5 digits
    assert metric_rows and old in metric_rows[0] and new in metric_rows[0], metric_rows
    assert any("train.hist_gb.learning_rate" in line and "0.1" in line
               for line in report.splitlines())  # fmt: skip
    assert "### metrics gate FAILED against `main`: pr_auc" in report
    assert "❌ FAIL" in report


def test_gate_step_fails_the_job_on_that_regression_and_passes_without_it(reviewed):
    failed = sh(reviewed, str(BIN / "churn"), "gate", "--rev", "main", check=False)
    assert failed.returncode == 1 and "pr_auc" in failed.stderr
    sh(reviewed, "git", "checkout", "--", "reports/metrics.json")
    passed = sh(reviewed, str(BIN / "churn"), "gate", "--rev", "main")
    assert "metrics gate passed against `main`" in passed.stdout


def test_small_pipeline_then_smoke_serves_its_model_from_a_scratch_registry(tmp_path):
    repo = make_repo(tmp_path, n_users=7043, n_months=6)
    set_param(repo, "train.hist_gb.max_iter", 50)  # a params change, as a PR would have
    result = sh(repo, "bash", str(CI / "small-pipeline"), "600", "2")
    params = (repo / "params.yaml").read_text()
    assert "n_users: 600" in params and "n_months: 2" in params
    assert "metrics gate passed (no baseline: limits only)" in result.stdout
    assert json.loads((repo / ("ci-" + CHAMPION_JSON)).read_text())["version"] == "1"
    assert not (repo / "registry").exists()  # the committed registry is never written
    smoke = subprocess.run(
        [str(BIN / "python"), str(CI / "smoke.py"), "--timeout", "90"], cwd=repo,
        capture_output=True, text=True, timeout=300,
        env={**env(), "CHURN_REGISTRY_DIR": "ci-registry"},  # as the workflow's job env sets it
    )  # fmt: skip
    assert smoke.returncode == 0, smoke.stderr
    assert "smoke: ok" in smoke.stdout and '"model_version": "1"' in smoke.stdout
    assert (repo / "ci-logs/serve.log").exists()


def test_smoke_fails_with_the_reason_when_the_api_never_gets_ready(tmp_path):
    (tmp_path / "empty-registry").mkdir()
    result = subprocess.run(
        [str(BIN / "python"), str(CI / "smoke.py"), "--timeout", "5"], cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
        env={**env(), "CHURN_REGISTRY_DIR": "empty-registry"},
    )  # fmt: skip
    assert result.returncode == 1
    assert "/ready did not answer 200 within 5 s" in result.stderr
    assert "no champion yet" in result.stderr  # the 503's reason, from the server's answer


def test_dvc_remote_step_skips_without_a_secret_and_round_trips_a_shared_folder(tmp_path):
    """scripts/ci/dvc-remote, as the workflows call it: no DVC_REMOTE_URL, no change; with
    one, push from a repo and pull into a fresh clone, after which nothing reruns."""
    repo, clone, remote = tmp_path / "repo", tmp_path / "clone", tmp_path / "remote"
    repo.mkdir()
    (repo / "dvc.yaml").write_text(
        "stages:\n  make:\n    cmd: python -c \"open('out.bin','wb').write(bytes(300000))\"\n"
        "    outs:\n      - out.bin\n"
    )
    sh(repo, "git", "init", "-q")
    dvc(repo, "init", "-q")
    dvc(repo, "repro")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "pipeline")
    config = (repo / ".dvc" / "config").read_text()

    skipped = sh(repo, "bash", str(CI / "dvc-remote"), "push", extra_env={"DVC_REMOTE_URL": ""})
    assert "DVC_REMOTE_URL is not set: no remote, nothing to push" in skipped.stdout
    assert not (repo / ".dvc" / "config.local").exists()

    shared = {"DVC_REMOTE_URL": str(remote)}
    pushed = sh(repo, "bash", str(CI / "dvc-remote"), "push", extra_env=shared)
    assert "push 1 outputs, 1 files, 0.3 MB to remote team" in pushed.stderr
    assert (repo / ".dvc" / "config").read_text() == config  # the remote stays local
    assert any(p.is_file() for p in remote.rglob("*"))

    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    pulled = sh(clone, "bash", str(CI / "dvc-remote"), "pull", extra_env=shared)
    assert "pull 1 outputs, 1 files, 0.3 MB from remote team" in pulled.stderr
    assert (clone / "out.bin").stat().st_size == 300000
    assert "Stage 'make' didn't change" in dvc(clone, "repro").stdout
