"""gate: the CI check on reports/metrics.json.

Each metric listed under `gate.metrics` in params must be present, stay on the right
side of its floor (or ceiling, for lower-is-better metrics) and, when a baseline is
given (a metrics file or a git revision such as `main`), not regress by more than its
tolerance, absolute or relative to the baseline value.
"""

from __future__ import annotations

import json
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from churn.errors import ChurnError
from churn.params import GateRule, Params

METRICS_FILE = Path("reports/metrics.json")
LOWER_IS_BETTER = frozenset(
    {"brier", "log_loss", "ece", "roc_auc_cv_std", "oot.brier", "oot.ece", "oot.log_loss"}
)
PASS, FAIL = "pass", "fail"


@dataclass(frozen=True)
class Check:
    metric: str
    current: float | None
    baseline: float | None
    limit: str  # "≥ 0.75", "≤ 0.25" or ""
    allowed: str  # "-0.01", "-10 %" or ""
    verdict: str
    reason: str

    @property
    def delta(self) -> float | None:
        if self.current is None or self.baseline is None:
            return None
        return self.current - self.baseline


def parse_metrics(text: str, source: str) -> dict[str, Any]:
    """A metrics JSON object; `source` names it in errors."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ChurnError(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ChurnError(f"{source}: expected a JSON object of metric names to numbers")
    return data


def read_metrics(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ChurnError(f"{path}: not found; run `dvc repro` (or `churn evaluate`) first")
    return parse_metrics(path.read_text(), str(path))


def metrics_at_rev(rev: str, path: str | Path = METRICS_FILE) -> dict[str, Any] | None:
    """The metrics file as committed at a git revision; None when the file is not there."""
    try:
        known = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    except OSError as exc:
        raise ChurnError(f"git is needed for --rev ({exc})") from None
    if known.returncode != 0:
        raise ChurnError(f"git revision '{rev}' not found (in CI: checkout with fetch-depth: 0)")
    shown = subprocess.run(
        ["git", "show", f"{rev}:{Path(path).as_posix()}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if shown.returncode != 0:
        return None
    return parse_metrics(shown.stdout, f"{rev}:{path}")


def flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested metrics as `dvc metrics show` names them: {"oot": {"roc_auc": …}} -> oot.roc_auc."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _number(metrics: dict[str, Any], name: str, source: str) -> float | None:
    metrics = flatten(metrics)
    if name not in metrics:
        return None
    value = metrics[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ChurnError(f"{source}: metric '{name}' is {value!r}, not a finite number")
    return float(value)


def limits(params: Params) -> dict[str, GateRule]:
    """The rules of params.gate; roc_auc and pr_auc take their floors from promote.min_*."""
    floors = {"roc_auc": params.promote.min_roc_auc, "pr_auc": params.promote.min_pr_auc}
    rules = {}
    for name, rule in params.gate.metrics.items():
        if rule.min is None and name in floors and name not in LOWER_IS_BETTER:
            rule = rule.model_copy(update={"min": floors[name]})
        rules[name] = rule
    return rules


def noise_floors(metrics_path: str | Path) -> dict[str, float]:
    """ECE a perfectly calibrated model would show on the evaluated rows, from the
    evaluation.json beside the metrics file (absent: no allowance)."""
    path = Path(metrics_path).with_name("evaluation.json")
    if not path.exists():
        return {}
    details = parse_metrics(path.read_text(), str(path))
    floors = {"ece": details.get("ece_noise_floor"),
              "oot.ece": (details.get("oot") or {}).get("ece_noise_floor")}  # fmt: skip
    return {k: float(v) for k, v in floors.items() if isinstance(v, int | float)}


def check_metric(
    name: str,
    rule: GateRule,
    current: float | None,
    baseline: float | None,
    noise: float | None = None,
) -> Check:
    """One metric against its rule. `noise` (ECE on few rows) lifts a ceiling to twice
    what chance alone gives a calibrated model, as promote's calibration gate does."""
    if noise is not None and rule.max is not None and 2 * noise > rule.max:
        rule = rule.model_copy(update={"max": round(2 * noise, 4)})
    lower_better = name in LOWER_IS_BETTER
    bounds = [
        f"{op} {value:g}" for op, value in (("≥", rule.min), ("≤", rule.max)) if value is not None
    ]
    limit = " and ".join(bounds)
    sign = "+" if lower_better else "-"
    allowed = f"{sign}{rule.tolerance:.0%}" if rule.relative else f"{sign}{rule.tolerance:g}"
    if baseline is None:
        allowed = ""

    def result(verdict: str, reason: str) -> Check:
        return Check(name, current, baseline, limit, allowed, verdict, reason)

    if current is None and rule.optional:
        return result(PASS, "absent (optional: e.g. no later month with labels)")
    if current is None:
        return result(FAIL, "missing from the metrics file")
    if rule.min is not None and current < rule.min:
        return result(FAIL, f"below the floor {rule.min:g}")
    if rule.max is not None and current > rule.max:
        return result(FAIL, f"above the ceiling {rule.max:g}")
    if baseline is None:
        return result(PASS, "no baseline value: limits only")
    regression = (current - baseline) if lower_better else (baseline - current)
    budget = rule.tolerance * abs(baseline) if rule.relative else rule.tolerance
    if regression > budget + 1e-12:
        worse = "rose" if lower_better else "fell"
        return result(FAIL, f"{worse} by {regression:.4g}, more than the {budget:.4g} allowed")
    if regression > 0:
        return result(PASS, f"regressed by {regression:.4g}, within {budget:.4g}")
    return result(PASS, "")


def run_gate(
    params: Params,
    current: dict[str, Any],
    baseline: dict[str, Any] | None,
    current_source: str = str(METRICS_FILE),
    baseline_source: str = "baseline",
    noise: dict[str, float] | None = None,
) -> list[Check]:
    checks = []
    for name, rule in limits(params).items():
        value = _number(current, name, current_source)
        before = None if baseline is None else _number(baseline, name, baseline_source)
        checks.append(check_metric(name, rule, value, before, (noise or {}).get(name)))
    return checks


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def render(checks: list[Check], baseline_name: str | None, markdown: bool) -> str:
    """The verdict table: plain text for a terminal, GitHub markdown for a PR comment."""
    failed = [c for c in checks if c.verdict == FAIL]
    header = ["metric", "current", baseline_name or "baseline", "Δ", "limit", "allowed Δ",
              "verdict", "why"]  # fmt: skip
    marks = {PASS: "✅ pass", FAIL: "❌ FAIL"} if markdown else {PASS: "pass", FAIL: "FAIL"}
    rows = [
        [c.metric, _fmt(c.current), _fmt(c.baseline), _fmt(c.delta, signed=True), c.limit,
         c.allowed, marks[c.verdict], c.reason]
        for c in checks
    ]  # fmt: skip
    against = f"against `{baseline_name}`" if baseline_name else "(no baseline: limits only)"
    if failed:
        names = ", ".join(c.metric for c in failed)
        summary = f"metrics gate FAILED {against}: {names}"
    else:
        summary = f"metrics gate passed {against}: {len(checks)} metrics checked"
    if markdown:
        lines = [f"### {summary}", "", "| " + " | ".join(header) + " |",
                 "|" + "---|" * len(header)]  # fmt: skip
        lines += ["| " + " | ".join(cell or " " for cell in row) + " |" for row in rows]
        return "\n".join(lines) + "\n"
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
             for r in [header, *rows]]  # fmt: skip
    return "\n".join([summary, *lines]) + "\n"
