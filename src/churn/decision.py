"""Decisions in money: whom to offer a retention deal, and what it is worth.

Offering a deal to a user costs `offer_cost`; a churner who gets it stays with
probability `save_rate` and is then worth `value_months` months of their fee (or a flat
`customer_value` when the data has no fee column). So contacting user i is worth, in
expectation, p_i * save_rate * value_i - offer_cost, and on labelled data the realised
value of contacting a set S is sum over S of (y_i * save_rate * value_i - offer_cost).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from churn.params import DecisionParams

# Candidate thresholds: round numbers, so the chosen one is the same on every machine.
GRID = np.round(np.arange(1, 100) / 100, 2)


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
