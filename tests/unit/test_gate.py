"""`churn gate`: floors from params, regressions against a file or a git revision."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from churn import gate
from churn.cli import app
from churn.errors import ChurnError
from churn.params import GateRule, parse_params

GOOD = {"roc_auc": 0.90, "pr_auc": 0.70, "recall_at_top_10pct": 0.30, "brier": 0.12,
        "ece": 0.02, "roc_auc_cv_mean": 0.89, "roc_auc_cv_std": 0.01,
        "oot": {"as_of": "2024-02-29", "roc_auc": 0.88, "ece": 0.03}}  # fmt: skip


def params(**gate_metrics):
    raw = {"gate": {"metrics": gate_metrics}} if gate_metrics else {}
    return parse_params(raw)


def verdicts(current, baseline=None, p=None):
    return {c.metric: c for c in gate.run_gate(p or params(), current, baseline)}


def test_identical_metrics_pass_and_floors_come_from_promote():
    checks = verdicts(GOOD, GOOD)
    assert {c.verdict for c in checks.values()} == {"pass"}
    assert checks["roc_auc"].limit == "≥ 0.75"  # promote.min_roc_auc
    assert checks["pr_auc"].limit == "≥ 0.4"


def test_floor_breach_fails_even_without_a_baseline():
    checks = verdicts({**GOOD, "roc_auc": 0.74})
    assert checks["roc_auc"].verdict == "fail"
    assert "below the floor 0.75" in checks["roc_auc"].reason
    assert checks["pr_auc"].verdict == "pass"


def test_regression_within_tolerance_passes_and_says_so():
    checks = verdicts({**GOOD, "roc_auc": 0.895}, GOOD)  # tolerance 0.01
    assert checks["roc_auc"].verdict == "pass"
    assert "within" in checks["roc_auc"].reason


def test_regression_beyond_absolute_tolerance_fails():
    checks = verdicts({**GOOD, "roc_auc": 0.885}, GOOD)
    assert checks["roc_auc"].verdict == "fail"
    assert "fell by 0.015" in checks["roc_auc"].reason
    assert checks["roc_auc"].delta == pytest.approx(-0.015)


def test_relative_tolerance_scales_with_the_baseline():
    # recall_at_top_10pct: 10 % of 0.30 = 0.03
    assert verdicts({**GOOD, "recall_at_top_10pct": 0.275}, GOOD)["recall_at_top_10pct"].verdict \
        == "pass"  # fmt: skip
    assert verdicts({**GOOD, "recall_at_top_10pct": 0.265}, GOOD)["recall_at_top_10pct"].verdict \
        == "fail"  # fmt: skip


def test_lower_is_better_metrics_regress_upwards_and_have_ceilings():
    p = params(brier={"tolerance": 0.1, "relative": True, "max": 0.2})
    assert verdicts({**GOOD, "brier": 0.10}, GOOD, p)["brier"].verdict == "pass"  # improved
    assert verdicts({**GOOD, "brier": 0.14}, GOOD, p)["brier"].verdict == "fail"  # +17 %
    above = verdicts({**GOOD, "brier": 0.21}, None, p)["brier"]
    assert above.verdict == "fail" and "ceiling" in above.reason


def test_missing_metric_fails_and_a_new_metric_has_no_baseline():
    missing = verdicts({k: v for k, v in GOOD.items() if k != "pr_auc"}, GOOD)["pr_auc"]
    assert missing.verdict == "fail" and "missing" in missing.reason
    new = verdicts(GOOD, {"roc_auc": 0.9})["pr_auc"]
    assert new.verdict == "pass" and "no baseline" in new.reason


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"roc_auc": "high"}', "metric 'roc_auc' is 'high', not a finite number"),
        ('{"roc_auc": NaN}', "metric 'roc_auc' is nan"),
    ],
)
def test_malformed_metrics_name_the_file_and_the_problem(tmp_path, text, message):
    path = tmp_path / "metrics.json"
    path.write_text(text)
    with pytest.raises(ChurnError, match=str(path)) as info:
        gate.run_gate(params(), gate.read_metrics(path), None, str(path))
    assert message in str(info.value)


def test_rules_can_be_changed_in_params():
    p = params(roc_auc={"tolerance": 0.0, "min": 0.95})
    assert gate.limits(p) == {"roc_auc": GateRule(tolerance=0.0, min=0.95)}
    assert verdicts(GOOD, GOOD, p)["roc_auc"].verdict == "fail"  # 0.90 < 0.95


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@e", *args], cwd=repo,
                   check=True, capture_output=True)  # fmt: skip


def test_baseline_from_a_git_revision(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    git(tmp_path, "init", "-q", "-b", "main")
    Path("README").write_text("x")
    git(tmp_path, "add", "README")
    git(tmp_path, "commit", "-qm", "no metrics yet")
    assert gate.metrics_at_rev("main") is None  # a first PR has no baseline
    Path("reports").mkdir()
    Path("reports/metrics.json").write_text(json.dumps(GOOD))
    git(tmp_path, "add", "reports")
    git(tmp_path, "commit", "-qm", "metrics")
    assert gate.metrics_at_rev("main") == GOOD
    with pytest.raises(ChurnError, match="revision 'nope' not found"):
        gate.metrics_at_rev("nope")


def test_cli_exit_codes_and_markdown(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text("as_of: '2024-01-31'\n")
    Path("base.json").write_text(json.dumps(GOOD))
    Path("worse.json").write_text(json.dumps({**GOOD, "pr_auc": 0.60}))
    runner = CliRunner()
    ok = runner.invoke(app, ["gate", "--metrics", "base.json", "--baseline", "base.json", "--md"])
    assert ok.exit_code == 0, ok.output
    assert "| metric | current | base.json |" in ok.output and "✅ pass" in ok.output
    bad = runner.invoke(app, ["gate", "--metrics", "worse.json", "--baseline", "base.json"])
    assert bad.exit_code == 1
    assert "metrics gate FAILED against `base.json`: pr_auc" in bad.output
    assert "1 of 9 metrics failed: pr_auc" in bad.output
    both = runner.invoke(app, ["gate", "--baseline", "base.json", "--rev", "main"])
    assert both.exit_code == 1 and "not both" in both.output


def test_calibration_cv_and_next_month_are_gated():
    checks = verdicts({**GOOD, "ece": 0.07})
    assert checks["ece"].verdict == "fail" and "ceiling 0.05" in checks["ece"].reason
    worse = {**GOOD, "roc_auc_cv_mean": 0.85, "oot": {**GOOD["oot"], "roc_auc": 0.80}}
    checks = verdicts(worse, GOOD)
    assert checks["roc_auc_cv_mean"].verdict == "fail"
    assert checks["oot.roc_auc"].verdict == "fail"  # nested keys, as dvc metrics show names them
    assert checks["oot.roc_auc"].baseline == 0.88
    assert verdicts({**GOOD, "oot": {**GOOD["oot"], "ece": 0.2}})["oot.ece"].verdict == "fail"


def test_next_month_metrics_are_optional_but_the_calibration_ones_are_not():
    without = {k: v for k, v in GOOD.items() if k != "oot"}
    checks = verdicts(without, GOOD)
    assert checks["oot.roc_auc"].verdict == "pass" and "absent" in checks["oot.roc_auc"].reason
    no_ece = {k: v for k, v in GOOD.items() if k != "ece"}
    assert verdicts(no_ece)["ece"].verdict == "fail"


def test_the_ece_ceiling_rises_to_twice_the_noise_floor_of_a_small_split(tmp_path):
    (tmp_path / "evaluation.json").write_text(json.dumps({"ece_noise_floor": 0.04}))
    floors = gate.noise_floors(tmp_path / "metrics.json")
    assert floors == {"ece": 0.04}
    small = {**GOOD, "ece": 0.07}
    checks = {c.metric: c for c in gate.run_gate(params(), small, None, noise=floors)}
    assert checks["ece"].verdict == "pass" and checks["ece"].limit == "≤ 0.08"
    checks = {c.metric: c for c in gate.run_gate(params(), {**GOOD, "ece": 0.09}, None,
                                                 noise=floors)}  # fmt: skip
    assert checks["ece"].verdict == "fail"
    assert gate.noise_floors(tmp_path / "elsewhere" / "metrics.json") == {}
