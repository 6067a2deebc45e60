"""The monitor's reports from a hand-made timeline (the loop itself: tests/integration)."""

from __future__ import annotations

import copy

from churn import monitor


def step(as_of, version, auc, share, retrain=None, recommended=False, action="keep"):
    s = {"as_of": as_of, "champion_version": version, "champion_as_of": "2024-01-31",
         "champion_roc_auc": auc, "champion_test_roc_auc": 0.91, "drift_share": share,
         "n_drifted": int(share * 20), "drifted_columns": ["monthly_fee"] if share else [],
         "prediction_drift": False, "label_rate": 0.27, "retrain_recommended": recommended,
         "retrain_reasons": ["concept drift"] if recommended else [], "action": action}  # fmt: skip
    if retrain:
        s["retrain"] = retrain
    return s


TIMELINE = {
    "dry_run": False,
    "start_champion": {"version": "1", "as_of": "2024-01-31"},
    "end_champion": {"version": "2", "as_of": "2024-04-30"},
    "drift_threshold": 0.3,
    "max_auc_drop": 0.05,
    "months_checked": 3,
    "retrains": 1,
    "promotions": 1,
    "steps": [
        step("2024-02-29", "1", 0.91, 0.0),
        step("2024-04-30", "1", 0.70, 0.25, recommended=True, action="retrain",
             retrain={"decision": "promote", "failed_gates": [], "candidate_roc_auc": 0.88,
                      "candidate_sha256": "ab" * 32, "champion_version_after": "2"}),
        step("2024-05-31", "2", 0.89, 0.0),
    ],
}  # fmt: skip


def test_months_after_the_champion_in_order():
    manifest = {"snapshots": ["2024-01-31", "2024-02-29", "2024-03-31"]}
    assert monitor.months_after(manifest, "2024-01-31") == ["2024-02-29", "2024-03-31"]
    assert monitor.months_after(manifest, "2024-03-31") == []


def test_summary_markdown_has_one_row_per_month_and_the_decision():
    text = monitor.summary_markdown(TIMELINE)
    assert text.startswith("### Monitor: 1 retrain(s), 1 promotion(s)")
    rows = [line for line in text.splitlines() if line.startswith("| 2024-")]
    assert len(rows) == 3
    assert "| retrain | promote (candidate AUC 0.880, now v2) |" in rows[1]
    assert "v1 (as_of 2024-01-31) → v2 (as_of 2024-04-30)" in text
    assert "approves this promotion by merging" in text


def test_outputs_are_written_and_identical_on_a_rerun(tmp_path):
    monitor.write_outputs(TIMELINE, tmp_path / "a")
    monitor.write_outputs(copy.deepcopy(TIMELINE), tmp_path / "b")
    names = {"timeline.json", "timeline.png", "report.html", "summary.md"}
    assert {p.name for p in (tmp_path / "a").iterdir()} == names
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    png = (tmp_path / "a" / "timeline.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    page = (tmp_path / "a" / "report.html").read_text()
    assert '<section id="timeline">' in page and "data:image/png;base64," in page
    assert page.count("<tr><td>") == 3


def test_a_dry_run_timeline_plots_would_retrain_months(tmp_path):
    dry = copy.deepcopy(TIMELINE)
    dry.update(dry_run=True, retrains=0, promotions=0)
    dry["steps"][1]["action"] = "would_retrain"
    del dry["steps"][1]["retrain"]
    assert monitor.summary_markdown(dry).startswith("### Monitor: dry run, nothing changed")
    monitor.plot_timeline(dry, tmp_path / "t.png")
    assert (tmp_path / "t.png").read_bytes().startswith(b"\x89PNG")
