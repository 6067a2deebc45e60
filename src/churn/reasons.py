"""Reasons for a score: exact additive contributions per source column.

A served score is a calibration map applied to one model's own score: the log-odds
(`decision_function`) of a logistic regression or histogram boosting, the vote share of a
random forest. That score is split exactly: base + the sum of the contributions = the
score, before calibration (the map is monotonic, so a positive contribution raises the
probability too).

- Linear models: coefficient x the preprocessed value. Numbers are standardised, so a
  number's contribution is measured from the training mean; a category's is its level's
  coefficient; base is the intercept.
- Trees (histogram boosting, random forests): TreeSHAP (`shap.TreeExplainer`, path
  dependent, raw output); base is the model's mean score over its training rows.

The preprocessed columns are summed back to the column they came from (a number's value
and its missing indicator; a category's one-hot levels), so a reason names a column of the
data. Everything works on the preprocessed rows of `churn.fastpath.CompiledModel`, the ones
every runtime scores, so reasons do not depend on which runtime serves the score.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from churn.fastpath import CalibratedScores, CompiledModel, linear_terms

DEFAULT_TOP = 3
MAX_TOP = 10

Decompose = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Explainer:
    columns: tuple[str, ...]  # source columns, in the contract's order
    owner: np.ndarray  # per preprocessed column: the index of its source column
    kind: str  # "linear" | "tree"
    output: str  # what the contributions add up to: "log-odds" | "probability"
    decompose: Decompose  # preprocessed rows -> (base per row, contribution per column)
    score: Callable[[np.ndarray], np.ndarray]  # the model's own score before calibration

    def contributions(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(base per row, contribution per row and source column): base + row sum = the
        model's score before calibration."""
        base, parts = self.decompose(np.asarray(rows, dtype="float64"))
        summed = np.zeros((parts.shape[0], len(self.columns)))
        for j, source in enumerate(self.owner):
            summed[:, source] += parts[:, j]
        return base, summed


def source_owner(compiled: CompiledModel) -> np.ndarray:
    """For each column the preprocessing outputs (after dropping constant ones), the index
    in `compiled.features` of the column it came from."""
    width = len(compiled.numeric)
    owner = [*compiled.kept.tolist(), *compiled.indicator.tolist()]
    for j, block in enumerate(compiled.widths):
        owner += [width + j] * block
    return np.asarray(owner, dtype=int)[compiled.support]


def explainer_for(compiled: CompiledModel) -> Explainer:
    """The Explainer of a compiled model (linear terms, or TreeSHAP for tree ensembles);
    ValueError for an estimator neither covers."""
    owner = source_owner(compiled)
    terms = linear_terms(compiled)
    if terms is not None:
        coef = np.asarray(terms["coef"], dtype="float64")
        intercept = float(terms["intercept"])

        def linear(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return np.full(len(rows), intercept), rows * coef

        def decision(rows: np.ndarray) -> np.ndarray:
            return rows @ coef + intercept

        return Explainer(compiled.features, owner, "linear", "log-odds", linear, decision)
    final = compiled.estimator
    estimator = final.estimator if isinstance(final, CalibratedScores) else final
    kind = type(estimator).__name__
    if kind not in ("HistGradientBoostingClassifier", "RandomForestClassifier"):
        raise ValueError(f"no reasons for a {kind}: linear models and tree ensembles only")
    with warnings.catch_warnings():  # shap's plot colours call matplotlib's deprecated API
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        import shap  # here: a linear champion's server never imports it (numba: seconds)

    explainer = shap.TreeExplainer(estimator, model_output="raw")
    forest = kind == "RandomForestClassifier"
    expected = np.asarray(explainer.expected_value, dtype="float64").reshape(-1)
    base_value = float(expected[-1])  # the positive class's (a forest has one per class)

    def tree(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values = np.asarray(explainer.shap_values(rows, check_additivity=False))
        if forest:  # (rows, columns, classes) -> the positive class
            values = values[..., 1]
        return np.full(len(rows), base_value), values.reshape(len(rows), -1)

    def own(rows: np.ndarray) -> np.ndarray:
        if forest:
            return estimator.predict_proba(rows)[:, 1]
        return estimator.decision_function(rows)

    output = "probability" if forest else "log-odds"
    return Explainer(compiled.features, owner, "tree", output, tree, own)


def shown_values(values: np.ndarray) -> np.ndarray:
    """Raw values as a reason shows them: numbers with %g, yes/no for booleans, category
    levels as they are, "missing" for a null (vectorised: one call per column)."""
    values = np.asarray(values)
    if values.dtype == bool:
        return np.where(values, "yes", "no")
    if values.dtype.kind in "iuf":
        numbers = values.astype("float64")
        return np.where(np.isnan(numbers), "missing", np.char.mod("%g", numbers))
    codes, levels = pd.factorize(values.astype(object), use_na_sentinel=True)
    shown = np.array([str(level) for level in levels] + ["missing"], dtype=object)
    return shown[codes]  # code -1 (a null) picks the last: "missing"


RAISES, LOWERS = " → raises risk", " → lowers risk"


def reason_text(column: str, value: Any, contribution: float) -> str:
    """One line an agent reads: "monthly_fee 19.99 → raises risk" (never against the sign)."""
    return f"{column} {shown_values(np.array([value]))[0]}{RAISES if contribution > 0 else LOWERS}"


def reason_texts(
    explainer: Explainer, contributions: np.ndarray, frame: pd.DataFrame, k: int
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Many rows at once: the column index of each row's `k` largest contributions by size
    (n x k), their texts (k arrays; "" where a row has fewer non-zero contributions) and
    each row's first reason without its value ("monthly_fee raises risk", for counting).
    `frame` holds the rows' raw values of `explainer.columns`."""
    n = len(contributions)
    order = np.argsort(-np.abs(contributions), axis=1, kind="stable")[:, :k]
    rows = np.arange(n)
    texts, first = [], np.full(n, "", dtype=object)
    for rank in range(order.shape[1]):
        index = order[:, rank]
        signed = contributions[rows, index]
        text = np.full(n, "", dtype=object)
        for j in np.unique(index):
            mask = (index == j) & (signed != 0)
            if not mask.any():
                continue
            column = explainer.columns[j]
            shown = shown_values(frame[column].to_numpy()[mask]).astype(str)
            verb = np.where(signed[mask] > 0, RAISES, LOWERS)
            text[mask] = np.char.add(np.char.add(f"{column} ", shown), verb)
            if rank == 0:
                first[mask] = np.where(signed[mask] > 0, f"{column} raises risk",
                                       f"{column} lowers risk")  # fmt: skip
        texts.append(text)
    return order, texts, first


def top_reasons(
    explainer: Explainer, contributions: np.ndarray, values: list[list[Any]], k: int
) -> list[list[dict[str, Any]]]:
    """Per row, the `k` largest contributions by size (a zero one is never a reason), each
    with its column, the row's raw value, the signed contribution and its text. `values`
    holds each row's raw values in `explainer.columns` order."""
    frame = pd.DataFrame(values, columns=list(explainer.columns))
    order, texts, _ = reason_texts(explainer, contributions, frame, k)
    out = []
    for i, picks in enumerate(order):
        row = []
        for rank, j in enumerate(picks):
            contribution = float(contributions[i, j])
            if contribution == 0.0:
                break
            row.append({"column": explainer.columns[j], "value": _plain(values[i][j]),
                        "contribution": contribution, "text": str(texts[rank][i])})  # fmt: skip
        out.append(row)
    return out


def _plain(value: Any) -> Any:
    """A JSON-ready raw value (None for a missing number)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value
