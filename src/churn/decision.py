"""Decisions in money: whom to offer a retention deal, and what it is worth.

Offering a deal to a user costs `offer_cost`; a churner who gets it stays with
probability `save_rate` and is then worth `value_months` months of their fee (or a flat
`customer_value` when the data has no fee column). So contacting user i is worth, in
expectation, p_i * save_rate * value_i - offer_cost, and on labelled data the realised
value of contacting a set S is sum over S of (y_i * save_rate * value_i - offer_cost).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from churn.errors import ChurnError
from churn.io import REPORTS_DIR, read_json
from churn.params import DecisionParams, Params

# the save rate of this month's decisions, as `churn decide` resolved it (dvc.yaml)
DECISION_FILE = REPORTS_DIR / "decision.json"

# Candidate thresholds: round numbers, so the chosen one is the same on every machine.
GRID = np.round(np.arange(1, 100) / 100, 2)


def fixed_save_rate(p: DecisionParams) -> tuple[float, str] | None:
    """decision.save_rate when it is a number (and saying so); None for `measured`."""
    if p.save_rate == "measured":
        return None
    return float(p.save_rate), f"fixed: decision.save_rate {p.save_rate:g}"


def with_rate(params: Params, rate: float) -> Params:
    """`params` whose decision.save_rate is `rate`."""
    decision = params.decision.model_copy(update={"save_rate": float(rate)})
    return params.model_copy(update={"decision": decision})


def with_save_rate(params: Params, decision_file: Path = DECISION_FILE) -> tuple[Params, str]:
    """`params` whose decision.save_rate is a number, and why in words: the fixed one, or
    for `measured` the one `churn decide` resolved from the campaign measurements."""
    fixed = fixed_save_rate(params.decision)
    if fixed is not None:
        return params, fixed[1]
    if not decision_file.exists():
        raise ChurnError(f"{decision_file}: not found; decision.save_rate: measured is resolved "
                         "by `churn decide` (dvc repro runs it)")  # fmt: skip
    resolved = read_json(decision_file)
    rate = resolved.get("save_rate") if isinstance(resolved, dict) else None
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
        raise ChurnError(f"{decision_file}: save_rate {rate!r} is not a share in [0, 1]; run "
                         "`churn decide` again")  # fmt: skip
    return with_rate(params, rate), str(resolved.get("basis", ""))


def control_draw(ids: np.ndarray | pd.Series, as_of: str, seed: int, share: float) -> np.ndarray:
    """True for the users who are the control group if the threshold picks them: a seeded
    draw per (user id, month), so a user's group does not depend on the row order, on the
    other users or on the machine. A new draw every month."""
    ids = pd.Series(np.asarray(ids, dtype=object)).astype(str).to_numpy(dtype=object)
    if share <= 0 or len(ids) == 0:
        return np.zeros(len(ids), dtype=bool)
    hashed = pd.util.hash_array(ids, hash_key="churn-control-v1", categorize=False)
    key = np.uint64(int.from_bytes(hashlib.sha256(f"{seed}:{as_of}".encode()).digest()[:8],
                                   "little"))  # fmt: skip
    x = hashed ^ key  # splitmix64's finaliser: every bit of the key reaches every bit
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) * 2.0**-53 < share


def customer_values(frame: pd.DataFrame, p: DecisionParams) -> np.ndarray:
    """What keeping each user is worth: value_months x monthly fee, or the flat value."""
    if p.fee_column in frame.columns and pd.api.types.is_numeric_dtype(frame[p.fee_column]):
        fee = frame[p.fee_column].astype(float)
        fee = fee.fillna(fee.median() if fee.notna().any() else 0.0).clip(lower=0.0)
        return (p.value_months * fee).to_numpy()
    return np.full(len(frame), p.customer_value)


def value_basis(columns: list[str], p: DecisionParams) -> str:
    """How customer values are computed, in words (for reports)."""
    if p.fee_column in columns:
        return f"{p.value_months:g} x {p.fee_column}"
    return f"customer_value {p.customer_value:g} (no '{p.fee_column}' column)"


def expected_gain(probability: np.ndarray, values: np.ndarray, p: DecisionParams) -> np.ndarray:
    """Expected net value of offering the deal to each user."""
    return probability * p.save_rate * values - p.offer_cost


def realised_value(y: np.ndarray, contacted: np.ndarray, values: np.ndarray,
                   p: DecisionParams) -> float:  # fmt: skip
    """Net value of offering the deal to the `contacted` users, given who churned."""
    return float(np.sum(np.where(contacted, y * p.save_rate * values - p.offer_cost, 0.0)))


@dataclass(frozen=True)
class ValueCurve:
    thresholds: np.ndarray
    net_value: np.ndarray  # realised net value of contacting everyone at or above each one
    contacted: np.ndarray  # share of users contacted

    @property
    def best(self) -> float:
        """The threshold with the most net value (the lowest one among ties)."""
        return float(self.thresholds[int(np.argmax(self.net_value))])

    def rows(self, n_users: int) -> list[dict]:
        return [
            {"threshold": float(t), "net_value": float(v), "net_value_per_user": float(v / n_users),
             "contacted": float(c)}
            for t, v, c in zip(self.thresholds, self.net_value, self.contacted, strict=True)
        ]  # fmt: skip


def value_curve(
    y: np.ndarray, probability: np.ndarray, values: np.ndarray, p: DecisionParams
) -> ValueCurve:
    """Net value of the campaign for each threshold of GRID, on labelled data."""
    gain = y * p.save_rate * values - p.offer_cost
    order = np.argsort(-probability, kind="stable")
    cumulative = np.concatenate([[0.0], np.cumsum(gain[order])])
    # number of users with probability >= t, for each t
    counts = np.searchsorted(-probability[order], -GRID, side="right")
    return ValueCurve(GRID, np.round(cumulative[counts], 6), counts / max(len(y), 1))
