"""`churn monitor`, the closed loop, through scripts/ci/retrain (the retrain workflow's
step): real DVC, MLflow and Evidently on the six synthetic months (drift from month 3)
and on the two course months."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import CHAMPION_JSON, HISTORY_JSONL, REPO_ROOT
from tests.helpers import BIN, dvc, make_repo, ran_stages, set_param, sh

pytestmark = pytest.mark.slow

RETRAIN = str(REPO_ROOT / "scripts" / "ci" / "retrain")
WATCHED = (
    "params.yaml",
    "dvc.lock",
    CHAMPION_JSON,
    HISTORY_JSONL,
)


def snapshot(repo: Path) -> dict[str, bytes]:
    return {name: (repo / name).read_bytes() for name in WATCHED}


def champion(repo: Path) -> dict:
    return json.loads((repo / CHAMPION_JSON).read_text())


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = make_repo(tmp_path_factory.mktemp("monitor"), n_users=2000, n_months=6)
    # decisions from the campaigns the loop measures (~0.4 wide at 2 000 users a month)
    set_param(repo, "decision.save_rate", "measured")
    set_param(repo, "decision.max_save_rate_interval", 0.5)
    dvc(repo, "repro")
    assert champion(repo)["as_of"] == "2024-01-31"
    return repo


def test_dry_run_reports_every_month_and_changes_nothing(repo):
    before = snapshot(repo)
    result = sh(repo, "bash", RETRAIN, "--dry-run")
    assert snapshot(repo) == before
    assert not (repo / "reports/monitor").exists()
    table = [line.split() for line in result.stdout.splitlines() if line.startswith("2024-")]
    assert [row[0] for row in table] == ["2024-02-29", "2024-03-31", "2024-04-30", "2024-05-31",
                                         "2024-06-30"]  # fmt: skip
    assert "would_retrain" in result.stdout and "(dry run: nothing changed)" in result.stdout


def test_the_loop_retrains_after_the_injected_drift_and_promotes(repo):
    first = champion(repo)
    result = sh(repo, "bash", RETRAIN)
    timeline = json.loads((repo / "reports/monitor/timeline.json").read_text())
    steps = {s["as_of"]: s for s in timeline["steps"]}
    assert timeline["months_checked"] == 5 and not timeline["dry_run"]
    assert timeline["retrains"] >= 1 and timeline["promotions"] >= 1
    retrained = [s for s in timeline["steps"] if s["action"] == "retrain"]
    assert retrained[0]["as_of"] >= "2024-04-30"  # drift starts at month index 3
    assert all(steps[m]["action"] == "keep" for m in ("2024-02-29", "2024-03-31"))
    before = retrained[0]
    assert before["retrain_recommended"] and before["champion_version"] == first["version"]
    promoted = [s for s in retrained if s["retrain"]["decision"] == "promote"]
    month = promoted[-1]["as_of"]
    now = champion(repo)
    assert now["as_of"] == month and now["sha256"] != first["sha256"]
    assert yaml.safe_load((repo / "params.yaml").read_text())["as_of"] == month
    after = [s for s in timeline["steps"] if s["as_of"] > promoted[0]["as_of"]]
    assert all(s["champion_version"] == promoted[0]["retrain"]["champion_version_after"]
               for s in after)  # fmt: skip
    history = [json.loads(line) for line in (repo / HISTORY_JSONL).read_text()
               .splitlines()]  # fmt: skip
    assert history[-1]["action"] == "promote" and history[-1]["sha256"] == now["sha256"]
    # the champion that drift flagged is worse on that month than the one that replaced it
    assert before["champion_roc_auc"] < before["retrain"]["candidate_roc_auc"]
    assert "registry ok" in result.stdout
    assert "Data and pipelines are up to date" in dvc(repo, "status").stdout
    for name in ("timeline.png", "report.html", "summary.md"):
        assert (repo / "reports/monitor" / name).stat().st_size > 0
    assert "| retrain | promote" in (repo / "reports/monitor/summary.md").read_text()


def test_the_loop_measures_the_offer_with_a_control_group_and_decides_with_it(repo):
    """Each month the champion's call list holds out a control group and the synthetic
    source keeps each called churner with its true offer effect (0.25): the months pooled
    give a 95 % interval that holds it; `save_rate: measured` then decides with the last
    measurement before the newest month (the loop's last `dvc repro`)."""
    timeline = json.loads((repo / "reports/monitor/timeline.json").read_text())
    pool = timeline["campaign"]
    assert pool["months"] == [s["as_of"] for s in timeline["steps"]]
    assert pool["save_rate_low"] <= pool["true_save_rate"] == 0.25 <= pool["save_rate_high"]
    assert pool["save_rate_high"] - pool["save_rate_low"] < 0.25
    for step in timeline["steps"]:
        c = step["campaign"]
        assert c["control"] > 0 and c["contacted"] > 5 * c["control"]
        assert c["champion"]["version"] == step["champion_version"]
    ledger = json.loads((repo / "campaigns/streamflow-churn.json").read_text())["measurements"]
    assert [m["as_of"] for m in ledger] == pool["months"]
    report = json.loads((repo / "reports/campaign.json").read_text())
    assert report["pooled"]["save_rate"] == pool["save_rate"]
    assert (repo / "reports/campaign.png").stat().st_size > 0
    assert "Retention offer: called vs control" in (repo / "reports/monitor/summary.md").read_text()
    may = next(m for m in ledger if m["as_of"] == "2024-05-31")
    decision = json.loads((repo / "reports/decision.json").read_text())
    assert decision["month"] == "2024-06-30" and decision["save_rate"] == may["save_rate"]
    assert decision["basis"].startswith("measured: 2024-05-31 campaign")
    scoring = json.loads((repo / "reports/scoring.json").read_text())
    assert scoring["save_rate"] == round(may["save_rate"], 4)
    assert scoring["save_rate_basis"] == decision["basis"]


def test_after_the_loop_no_month_asks_for_a_retrain(repo):
    result = sh(repo, str(BIN / "churn"), "monitor", "--dry-run")
    assert "0 retrain(s)" in result.stdout and "would_retrain" not in result.stdout


@pytest.mark.realdata
def test_the_course_months(shared_data, tmp_path):
    """month_000 → month_001: the month_000 model is refused as the first champion (ROC AUC
    0.49 on month_001, whose labels were regenerated) until params waive the next-month
    floor; then the champion's AUC on month_001 collapses, the loop retrains on month_001,
    and that model misses the quality floors: skipped."""
    repo = make_repo(tmp_path, n_users=100, n_months=2)
    set_param(repo, "ingest.source", "snapshots")
    set_param(repo, "ingest.path", str(shared_data))
    set_param(repo, "ingest.snapshots.first_as_of", "2024-01-31")
    dvc(repo, "repro")
    refused = json.loads((repo / "reports/promotion.json").read_text())
    assert refused["decision"] == "skip" and refused["failed_gates"] == ["out_of_time_roc_auc"]
    assert not (repo / CHAMPION_JSON).exists()
    set_param(repo, "promote.min_oot_roc_auc", None)  # the stated exception
    assert ran_stages(dvc(repo, "repro")) == ["promote", "score"]
    first = champion(repo)
    (oot,) = [g for g in first["decision"]["gates"] if g["gate"] == "out_of_time_roc_auc"]
    assert oot["value"] < 0.55 and "no floor" in oot["detail"]
    sh(repo, str(BIN / "churn"), "monitor")
    timeline = json.loads((repo / "reports/monitor/timeline.json").read_text())
    (step,) = timeline["steps"]
    assert step["as_of"] == "2024-02-29" and step["retrain_recommended"]
    assert step["champion_roc_auc"] < 0.55  # 0.49 measured
    assert step["retrain"]["decision"] == "skip"
    assert "quality_floor_roc_auc" in step["retrain"]["failed_gates"]
    assert champion(repo)["sha256"] == first["sha256"]
    assert timeline["promotions"] == 0
