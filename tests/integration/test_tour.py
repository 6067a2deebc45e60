"""The README's first hour on a fresh clone: scripts/bootstrap, then scripts/tour (every
command the README's tour lists, in order; tests/unit/test_docs.py keeps the two in step).

The clone shares this test run's virtualenv (a symlinked .venv whose install stamp matches
the clone's requirement files, so bootstrap installs nothing): the package is installed
editable from this checkout, which is the same commit as the clone in CI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO_ROOT
from tests.helpers import ALL, env, free_port, sh, wait_until_ok

pytestmark = pytest.mark.slow

PINNED = ("requirements.txt", "requirements-dev.txt", "pyproject.toml")


def script(clone: Path, name: str, **extra_env: str) -> subprocess.CompletedProcess:
    """Run scripts/<name> in the clone (longer than helpers.sh allows: a busy machine)."""
    result = subprocess.run(["bash", f"scripts/{name}"], cwd=clone, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**env(), **extra_env},
                            timeout=2400)  # fmt: skip
    assert result.returncode == 0, f"scripts/{name} failed:\n{result.stdout}"
    return result


def registry_show(clone: Path) -> dict:
    out = sh(clone, str(clone / ".venv/bin/churn"), "registry", "show").stdout
    return json.loads(out[: out.index("\n}") + 2])


def run_metrics(clone: Path, run_id: str) -> dict | None:
    """The metrics of a run in the clone's MLflow store; None when it has no such run."""
    code = (
        "import json, sys, mlflow; mlflow.set_tracking_uri(sys.argv[1]); "
        "print(json.dumps(mlflow.MlflowClient().get_run(sys.argv[2]).data.metrics))"
    )
    uri = f"sqlite:///{clone / 'mlflow' / 'mlflow.db'}"
    found = subprocess.run([sys.executable, "-c", code, uri, run_id], capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    return json.loads(found.stdout.strip().splitlines()[-1]) if found.returncode == 0 else None


@dataclass(frozen=True)
class Toured:
    clone: Path
    committed: dict  # champion.json as committed
    boot: str  # scripts/bootstrap's output (stdout and stderr, interleaved)
    before: dict  # `churn registry show` after bootstrap
    model: dict  # GET /model after bootstrap
    status_after_boot: str  # git status --porcelain after bootstrap
    tour: str  # scripts/tour's output (stdout and stderr, interleaved)
    port: int


@pytest.fixture(scope="module")
def toured(tmp_path_factory) -> Toured:
    """One fresh clone, bootstrapped, then toured (the tests below read what happened)."""
    clone = tmp_path_factory.mktemp("tour") / "clone"
    sh(clone.parent, "git", "clone", "-q", str(REPO_ROOT), str(clone))
    sh(clone, "git", "checkout", "-q", "-B", "main")  # `dvc metrics diff main` needs it
    changed = [n for n in PINNED if (clone / n).read_bytes() != (REPO_ROOT / n).read_bytes()]
    if changed:
        pytest.fail(f"commit {changed} first: the clone would reinstall this run's venv")
    digest = sh(clone, "bash", "-c", "sha256sum requirements*.txt pyproject.toml | sha256sum")
    stamps = [Path(sys.prefix, f".{n}.sha256") for n in ("requirements", "requirements-dev")]
    if not any(p.exists() and p.read_text().split() == digest.stdout.split()[:1] for p in stamps):
        pytest.fail("this venv was not installed by scripts/install from these pins: run it")
    (clone / ".venv").symlink_to(Path(sys.prefix))
    committed = json.loads((clone / "registry/streamflow-churn/champion.json").read_text())
    boot = script(clone, "bootstrap")
    before = registry_show(clone)
    status = sh(clone, "git", "status", "--porcelain").stdout
    model = served_model(clone)
    port = free_port()
    tour = script(clone, "tour", PORT=str(port))
    return Toured(clone, committed, boot.stdout, before, model, status, tour.stdout, port)


def served_model(clone: Path) -> dict:
    """GET /model of a `churn serve` started in the clone."""
    port = free_port()
    log = clone.parent / "serve.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [str(clone / ".venv/bin/churn"), "serve", "--port", str(port)],
            cwd=clone,
            env=env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_ok(f"http://127.0.0.1:{port}/ready", server, log, 120)
        return httpx.get(f"http://127.0.0.1:{port}/model", timeout=10).json()
    finally:
        server.terminate()
        server.wait(timeout=30)


def explained(clone: Path, champion: dict, answer: dict) -> None:
    """The default lineage's champion (logistic regression) names three reasons whose
    contributions, with the base and the rest, add up to its log-odds of that user, computed
    here from the clone's model file and online table, not by the server."""
    code = (
        "import json, sys, pandas as pd; from churn import modelfile, registry; "
        "c = json.load(open(sys.argv[1])); m = modelfile.load(registry.verified_artifact(c)); "
        "o = pd.read_parquet(sys.argv[2]); row = o[o.user_id == 'SF-0000001']; "
        "f = m.named_steps['model'].calibrated_classifiers_[0].estimator; "
        "print(float(f.decision_function(m[:-1].transform(row[list(m.feature_names_in_)]))[0]))"
    )
    online = clone / "mlflow/online/registry-streamflow-churn/online_features.parquet"
    found = subprocess.run([sys.executable, "-c", code, str(clone / "registry/streamflow-churn/"
                            "champion.json"), str(online)], cwd=clone, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert found.returncode == 0, found.stderr
    log_odds = float(found.stdout.strip().splitlines()[-1])
    why = answer["explanation"]
    assert champion["version"] == answer["model_version"] and why["output"] == "log-odds"
    assert len(why["reasons"]) == 3
    total = why["base"] + sum(r["contribution"] for r in why["reasons"]) + why["rest"]
    assert abs(total - log_odds) < 1e-6 and abs(why["score"] - log_odds) < 1e-6
    for r in why["reasons"]:
        assert r["text"].endswith("raises risk" if r["contribution"] > 0 else "lowers risk")


def test_bootstrap_restores_the_committed_champion_in_one_line_and_changes_nothing(toured):
    restored = [line for line in toured.boot.splitlines() if "restored champion version" in line]
    assert len(restored) == 1, toured.boot
    assert f"version {toured.committed['version']} " in restored[0]
    assert not re.search(r"Created version|Successfully registered", toured.boot), toured.boot
    assert "smoke: ok" in toured.boot  # the API answered; /model's run id checked too
    assert toured.status_after_boot == ""  # dvc.lock, reports/, registry/ as committed


def test_one_run_id_that_resolves_in_the_clones_store(toured):
    before = toured.before
    assert before["version"] == toured.committed["version"]
    assert before["run_id"] != toured.committed["run_id"]  # the clone's own run
    assert before["decided_in_run"] == toured.committed["run_id"]
    assert toured.model["run_id"] == before["run_id"]  # GET /model names the same run
    assert toured.model["decided_in_run"] == toured.committed["run_id"]
    assert "roc_auc" in run_metrics(toured.clone, before["run_id"])
    assert run_metrics(toured.clone, toured.committed["run_id"]) is None


def test_after_bootstrap_repro_runs_nothing_and_the_registry_verifies(toured):
    """A fresh clone rebuilt and restored the champion: the next `dvc repro` is a no-op and
    `churn registry verify` finds champion.json, the alias and the bytes in agreement.
    `dvc repro -f` then reruns every stage to the same dvc.lock (the tour's `git diff
    --exit-code` stops it otherwise) and promote finds its model already the champion."""
    first = toured.tour.split("== dvc repro -f", 1)[0]
    assert "Running stage" not in first and "up to date" in first, first
    forced = toured.tour.split("== dvc repro -f", 1)[1].split("== an experiment", 1)[0]
    ran = re.findall(r"Running stage '(\w+)'", forced)
    assert ran == ALL, ran
    assert "is already the champion" in forced, forced[-2000:]
    verify = toured.tour.split("== the registry", 1)[1].split("== churn monitor: April", 1)[0]
    assert "registry ok" in verify, verify


def test_the_tour_experiment_changes_a_metric_and_the_monitor_retrains(toured):
    experiment = toured.tour.split("== an experiment", 1)[1].split("== churn gate", 1)[0]
    assert re.search(r"roc_auc\s+[\d.]+\s+[\d.]+\s+-?[\d.]+", experiment), experiment
    monitor = toured.tour.split("== churn monitor: April", 1)[1].split("== churn rollback", 1)[0]
    assert "1 promotion(s)" in monitor, monitor
    # every replayed month's call list held out a control group; the synthetic offer's true
    # effect (0.25) lies in the pooled 95 % interval of the default data's five months
    pooled = json.loads((toured.clone / "reports/monitor/timeline.json").read_text())["campaign"]
    assert len(pooled["months"]) == 5
    assert pooled["save_rate_low"] <= pooled["true_save_rate"] <= pooled["save_rate_high"]
    campaign = toured.tour.split("== churn campaign", 1)[1].split("== dvc plots show", 1)[0]
    assert '"as_of": "2024-06-30"' in campaign and '"save_rate_low"' in campaign, campaign
    assert (toured.clone / "calls.csv").is_file()
    assert "calls.csv" not in sh(toured.clone, "git", "status", "--porcelain").stdout


def test_the_rollback_returns_to_the_committed_champion_and_serving_agrees(toured):
    version = toured.committed["version"]
    assert f"champion is now version {version}" in toured.tour
    after = registry_show(toured.clone)
    assert (after["version"], after["sha256"]) == (version, toured.committed["sha256"])
    served = toured.tour.split(f"== churn serve on 127.0.0.1:{toured.port}", 1)[1]
    assert '"status":"ready"' in served.replace(" ", "") and '"churn_probability"' in served
    model = re.search(r"\{'version': '(\d+)', 'run_id': '([0-9a-f]{32})'", served)
    assert model and model.groups() == (after["version"], after["run_id"]), served
    assert run_metrics(toured.clone, after["run_id"]) is not None
    line = next(x for x in served.splitlines() if '"churn_probability"' in x)
    explained(toured.clone, after, json.loads(line))
    history = sh(toured.clone, str(toured.clone / ".venv/bin/churn"), "registry", "history")
    actions = [json.loads(line)["action"] for line in history.stdout.splitlines()]
    assert actions[-2:] == ["promote", "rollback"]
