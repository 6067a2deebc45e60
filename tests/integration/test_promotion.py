"""promote, rollback and verify against a real MLflow SQLite store and real files:
first promotion, a worse candidate skipped, experiments and dry runs, rollback and
its refusals, the lock, corrupt artifacts, and kill -9 at each step of a promotion."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from churn import drift, evaluate, ingest, prepare, promote, registry, tracking, train
from churn.errors import ChurnError
from churn.io import sha256_file
from tests.conftest import CHAMPION_JSON, HISTORY_JSONL, LINEAGE, REPO_ROOT, small_params

pytestmark = pytest.mark.slow

NAME = "streamflow-churn"
WEAK = {"train.hist_gb.max_iter": 10, "train.hist_gb.max_leaf_nodes": 2}  # passes the floors


def params(**overrides):
    return small_params(**{"ingest.synthetic.n_users": 600, **overrides})


def build(p) -> None:
    train.run(p)
    evaluate.run(p)
    drift.run(p)


@pytest.fixture
def work(workdir: Path) -> Path:
    p = params()
    ingest.run(p)
    prepare.run(p)
    return workdir


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """Built once for the module: the weak model promoted (version 1), then the default
    model built as the candidate (not promoted): where most tests below start."""
    root = tmp_path_factory.mktemp("promotion-template") / "work"
    root.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        ingest.run(params())
        prepare.run(params())
        build(params(**WEAK))
        promote.run(params(**WEAK))
        build(params())
    return root


@pytest.fixture
def challenged(template: Path, workdir: Path) -> Path:
    """A copy of the template in this test's own folder: MLflow's store and files record
    absolute artifact paths, so the copy's are moved to the new folder."""
    shutil.copytree(template, workdir, symlinks=True, dirs_exist_ok=True)
    old, new = str(template), str(workdir)
    with sqlite3.connect(workdir / "mlflow.db") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for _, column, kind, *_ in db.execute(f'PRAGMA table_info("{table}")'):
                if any(t in kind.upper() for t in ("CHAR", "TEXT", "CLOB")):
                    db.execute(f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                               f'WHERE instr("{column}", ?) > 0', (old, new, old))  # fmt: skip
    for path in workdir.rglob("*"):  # MLmodel files, the model store's runs.json
        if path.is_file() and path.suffix != ".db" and old.encode() in path.read_bytes():
            path.write_bytes(path.read_bytes().replace(old.encode(), new.encode()))
    return workdir


def champion() -> dict:
    return json.loads(Path(CHAMPION_JSON).read_text())


def history_actions() -> list[str]:
    return [r["action"] for r in registry.read_history()]


def test_first_promotion_then_a_worse_candidate_is_skipped(work):
    build(params())
    report = promote.run(params())
    assert report["decision"] == "promote"
    first = champion()
    assert first["version"] == "1" and first["sha256"] == sha256_file("models/model.skops")
    assert tracking.alias_version(NAME, "champion") == "1"
    assert Path(first["artifact_path"]).is_file() and not Path(first["artifact_path"]).is_absolute()

    build(params(**WEAK))
    report = promote.run(params(**WEAK))
    assert report["decision"] == "skip" and "non_regression" in report["failed_gates"]
    assert champion() == first  # untouched, byte for byte the same record
    assert tracking.alias_version(NAME, "champion") == "1"
    assert tracking.alias_version(NAME, "challenger") == "2"
    assert history_actions() == ["promote", "skip"]
    skip = registry.read_history()[-1]
    assert skip["latency_ms_1000_rows"] > 0  # the measured value lives in history only
    assert "latency" not in json.dumps(report["gates"][5]["value"])


def test_rerun_of_the_champion_gives_the_same_report_and_no_new_version(work):
    build(params())
    first = promote.run(params())
    again = promote.run(params())
    assert again == first
    assert history_actions() == ["promote"]
    assert tracking.find_version_by_sha(NAME, champion()["sha256"]) == "1"


@pytest.mark.parametrize("how", ["experiment", "dry_run"])
def test_experiments_and_dry_runs_decide_but_move_nothing(how, challenged, monkeypatch):
    before = (  # the weak champion; the workspace's candidate would be promoted
        Path(CHAMPION_JSON).read_text(),
        Path(HISTORY_JSONL).read_text(),
    )
    if how == "experiment":
        monkeypatch.setenv("DVC_EXP_NAME", "bold-exp")
    report = promote.run(params(), dry_run=how == "dry_run")
    assert report["decision"] == "promote" and report["mode"] == how
    after = (
        Path(CHAMPION_JSON).read_text(),
        Path(HISTORY_JSONL).read_text(),
    )
    assert after == before
    assert tracking.alias_version(NAME, "champion") == "1"
    assert tracking.find_version_by_sha(NAME, sha256_file("models/model.skops")) is None


def test_rollback_moves_alias_and_file_together_and_blocks_re_promotion(challenged):
    weak = champion()
    promote.run(params())
    strong = champion()
    assert strong["version"] == "2"

    entry = registry.rollback(NAME, None, "alerts on v2")
    assert entry["version"] == "1" and champion()["sha256"] == weak["sha256"]
    assert tracking.alias_version(NAME, "champion") == "1"
    last = registry.read_history()[-1]
    assert last["action"] == "rollback" and last["reason"] == "alerts on v2"
    assert last["version_before"] == "2" and last["version_after"] == "1"

    # the pipeline reruns with the rolled-back candidate: it is not promoted again
    report = promote.run(params())
    assert "not_rolled_back" in report["failed_gates"]
    assert champion()["version"] == "1"


def test_rollback_refusals(challenged):
    with pytest.raises(ChurnError, match="no previous champion"):
        registry.rollback(NAME, None, "why")
    with pytest.raises(ChurnError, match="already the champion"):
        registry.rollback(NAME, "1", "why")
    with pytest.raises(ChurnError, match="does not exist"):
        registry.rollback(NAME, "42", "why")
    with pytest.raises(ChurnError, match="--reason"):
        registry.rollback(NAME, "1", "  ")
    promote.run(params())
    v1 = Path(registry.store_path(tracking.version_summary(NAME, "1")["tags"]["model_sha256"]))
    v1.unlink()
    with pytest.raises(ChurnError, match=r"absent|not downloadable"):
        # the store copy is gone; MLflow still has it, so it is fetched and verified
        registry.verified_artifact({"artifact_path": str(v1), "artifact_uri": None,
                                    "version": "1", "sha256": v1.parent.name})  # fmt: skip
    v1.parent.mkdir(parents=True, exist_ok=True)
    v1.write_bytes(b"not the model")
    with pytest.raises(ChurnError, match="does not match"):
        registry.rollback(NAME, "1", "why")
    assert champion()["version"] == "2"  # refusals change nothing
    assert history_actions() == ["promote", "promote"]


def test_champion_with_corrupt_artifact_is_never_used(work):
    build(params())
    promote.run(params())
    path = Path(champion()["artifact_path"])
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ChurnError, match="does not match"):
        registry.verified_artifact(champion())
    problems = registry.verify(NAME)
    assert any("does not match" in p for p in problems)
    # promote refuses to decide against it (it used to decide against the recorded metric
    # after a warning), unless told to with --repair; the champion is untouched
    build(params(**WEAK))
    before = Path(CHAMPION_JSON).read_text()
    with pytest.raises(ChurnError, match=r"against champion version 1: .*does not match"):
        promote.run(params(**WEAK))
    assert Path(CHAMPION_JSON).read_text() == before
    dry = promote.run(params(**WEAK), dry_run=True)  # a report changes nothing: allowed
    assert "recorded metric" in next(g for g in dry["gates"]
                                     if g["gate"] == "non_regression")["detail"]  # fmt: skip
    report = promote.run(params(**WEAK), repair=True)
    gate = next(g for g in report["gates"] if g["gate"] == "non_regression")
    assert "recorded metric" in gate["detail"]


def test_the_lock_serialises_promote_and_rollback(work):
    with (
        registry.locked(),
        pytest.raises(ChurnError, match="holds the lock"),
        registry.locked(timeout_s=0.3),
    ):
        pass


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "churn", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)  # fmt: skip


def write_params_file(p) -> None:
    Path("params.yaml").write_text(yaml.safe_dump(p.model_dump()))


@pytest.mark.parametrize("point", ["after_alias", "before_rename", "after_file"])
def test_kill_9_during_promotion_leaves_a_whole_champion_and_verify_repairs(point, challenged):
    old = Path(CHAMPION_JSON).read_text()
    write_params_file(params())
    crashed = cli("promote", env={"CHURN_CRASH_AT": point})
    assert crashed.returncode == -9, crashed.stderr
    text = Path(CHAMPION_JSON).read_text()
    entry = json.loads(text)  # always a complete file...
    new_sha = sha256_file("models/model.skops")
    assert text == old or entry["sha256"] == new_sha  # ...either the old or the new one
    verify = cli("registry", "verify")
    if point == "before_rename":  # the crashed writer's temp file: git-ignored, then cleaned
        assert [p.name for p in Path(LINEAGE).glob(".champion.json.*.tmp")]
        ignored = (REPO_ROOT / ".gitignore").read_text().splitlines()
        assert "/registry/*/.*.tmp" in ignored
    if point == "after_file":
        # a champion with no history record: found, repaired from the file, rollback works
        assert (
            entry["sha256"] == new_sha and entry["previous"]["sha256"] == json.loads(old)["sha256"]
        )
        assert verify.returncode == 1 and "no record made version 2" in verify.stdout
        repaired = cli("registry", "verify", "--repair")
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr
        last = registry.read_history()[-1]
        assert last["action"] == "promote" and last["repaired"] and last["sha256"] == new_sha
        assert cli("registry", "verify").returncode == 0
        back = cli("rollback", "--reason", "after the crash")
        assert back.returncode == 0, back.stderr
        assert champion()["version"] == "1"
        return
    assert text == old
    assert verify.returncode == 1 and "--repair" in verify.stdout  # half-moved alias found
    repaired = cli("registry", "verify", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert tracking.alias_version(NAME, "champion") == "1"
    assert cli("registry", "verify").returncode == 0
    assert history_actions()[-1] == "repair"
    assert not list(Path(LINEAGE).glob(".champion.json.*.tmp"))
    shutil.rmtree("mlflow/models", ignore_errors=True)


def test_promote_decides_the_same_bytes_under_a_cpu_hog(challenged):
    """A decision is a function of the inputs: three dry runs with both cores busy give a
    byte-identical promotion.json (the 1 000-row timing no longer has a verdict)."""
    hog = [
        sys.executable,
        "-c",
        "import time\nend = time.time() + 300\nwhile time.time() < end: pass",
    ]
    hogs = [subprocess.Popen(hog) for _ in range(2)]
    try:
        reports = []
        for _ in range(3):
            promote.run(params(**{"promote.latency_budget_ms": 1.0}), dry_run=True)
            reports.append(Path("reports/promotion.json").read_bytes())
    finally:
        for proc in hogs:
            proc.kill()
            proc.wait()
    assert reports[0] == reports[1] == reports[2]
    latency = next(g for g in json.loads(reports[0])["gates"] if g["gate"] == "sanity_latency")
    assert latency["verdict"] == "info" and latency["value"] is None
    assert json.loads(reports[0])["decision"] == "promote"  # 1 ms budget: a timing cannot veto
