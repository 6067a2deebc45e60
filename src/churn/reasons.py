"""Reasons for a score: exact additive contributions per source column.

A served score is a calibration map applied to one model's own score: the log-odds
(`decision_function`) of a logistic regression or histogram boosting, the vote share of a
random forest. That score is split exactly: base + the sum of the contributions = the
score, before calibration (the map is monotonic, so a positive contribution raises the
probability too).

- Linear models: coefficient x the preprocessed value. Numbers are standardised, so a
  number's contribution is measured from the training mean; a category's is its level's
  coefficient; base is the intercept.
- Trees (histogram boosting, random forests): TreeSHAP (path dependent, raw output);
  base is the model's mean score over its training rows. Histogram boosting's small trees
  (≤ MAX_TABLE_SPLITS splits each) use TreeSHAP tabled per split pattern (BoostingTables:
  the same values, ~10x faster); bigger trees and forests use `shap.TreeExplainer`.

The preprocessed columns are summed back to the column they came from (a number's value
and its missing indicator; a category's one-hot levels), so a reason names a column of the
data. Everything works on the preprocessed rows of `churn.fastpath.CompiledModel`, the ones
every runtime scores, so reasons do not depend on which runtime serves the score.
"""

from __future__ import annotations

import itertools
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
    if kind == "HistGradientBoostingClassifier":
        tables = boosting_tables(estimator)
        if tables is not None:
            return Explainer(compiled.features, owner, "tree", "log-odds", tables.decompose,
                             estimator.decision_function)  # fmt: skip
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


MAX_TABLE_SPLITS = 8  # a tree with more splits goes to shap (2^splits rows per table)


@dataclass(frozen=True)
class _Tree:
    nodes: np.ndarray  # the internal nodes, in the order of a pattern's bits
    features: np.ndarray  # the columns they split on
    thresholds: np.ndarray
    missing_left: np.ndarray
    used: np.ndarray  # the distinct columns of the tree
    table: np.ndarray  # (2^splits, len(used)): TreeSHAP values for each split pattern


@dataclass(frozen=True)
class BoostingTables:
    """Path-dependent TreeSHAP of a histogram-boosting model with small trees, tabled: a
    tree's SHAP values depend on a row only through which way it goes at each split, so
    for each of a tree's 2^splits patterns they are computed once (the Shapley formula over
    the tree's own columns, with TreeSHAP's cover-weighted expectation), and a row's
    values are a table look-up per tree. The same numbers as shap.TreeExplainer (test),
    about 10x faster: what makes reasons in `churn score` affordable at millions of rows."""

    trees: tuple[_Tree, ...]
    base: float

    def decompose(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        columns = np.ascontiguousarray(rows.T)  # one contiguous array per column
        parts = np.zeros((rows.shape[1], rows.shape[0]))
        for t in self.trees:
            pattern = np.zeros(rows.shape[0], dtype=np.int64)
            for bit, (f, threshold, missing) in enumerate(
                zip(t.features, t.thresholds, t.missing_left, strict=True)
            ):
                x = columns[f]
                left = x <= threshold
                if missing:
                    left |= np.isnan(x)
                pattern |= left.astype(np.int64) << bit
            for j, f in enumerate(t.used):
                parts[f] += t.table[pattern, j]
        return np.full(rows.shape[0], self.base), parts.T


def boosting_tables(estimator: Any) -> BoostingTables | None:
    """The tabled TreeSHAP of a fitted binary HistGradientBoostingClassifier; None when a
    tree is too large to table or uses native categorical splits (shap then)."""
    predictors = [p[0] for p in estimator._predictors]
    if any(len(p) != 1 for p in estimator._predictors):
        return None
    trees, base = [], float(np.asarray(estimator._baseline_prediction).reshape(-1)[0])
    for predictor in predictors:
        nodes = predictor.nodes
        inner = np.flatnonzero(~nodes["is_leaf"].astype(bool))
        if len(inner) > MAX_TABLE_SPLITS or nodes["is_categorical"][inner].any():
            return None
        table, expected = _tree_table(nodes, inner)
        features = nodes["feature_idx"][inner].astype(np.int64)
        trees.append(_Tree(inner, features, nodes["num_threshold"][inner].astype(np.float64),
                           nodes["missing_go_to_left"][inner].astype(bool),
                           np.unique(features), table))  # fmt: skip
        base += expected
    return BoostingTables(tuple(trees), base)


def _tree_table(nodes: np.ndarray, inner: np.ndarray) -> tuple[np.ndarray, float]:
    """(2^splits x used columns) SHAP values of one tree for every split pattern (bit k:
    the row goes left at inner[k]), and the tree's expected value (cover-weighted)."""
    bit_of = {int(node): k for k, node in enumerate(inner)}
    used = np.unique(nodes["feature_idx"][inner])
    patterns = np.arange(2 ** len(inner))
    m = len(used)

    def expectation(node: int, known: frozenset) -> np.ndarray:
        """E[tree | the columns in `known` as the pattern says, the rest by cover]."""
        n = nodes[node]
        if n["is_leaf"]:
            return np.full(len(patterns), float(n["value"]))
        left, right = expectation(int(n["left"]), known), expectation(int(n["right"]), known)
        if int(n["feature_idx"]) in known:
            return np.where((patterns >> bit_of[node]) & 1 == 1, left, right)
        cl, cr = float(nodes[int(n["left"])]["count"]), float(nodes[int(n["right"])]["count"])
        return (cl * left + cr * right) / (cl + cr)

    values = {}
    for size in range(m + 1):
        for subset in itertools.combinations(used.tolist(), size):
            values[frozenset(subset)] = expectation(0, frozenset(subset))
    table = np.zeros((len(patterns), m))
    for j, f in enumerate(used.tolist()):
        others = [g for g in used.tolist() if g != f]
        for size in range(m):
            weight = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
            for subset in itertools.combinations(others, size):
                s = frozenset(subset)
                table[:, j] += weight * (values[s | {f}] - values[s])
    return table, float(values[frozenset()][0])


SHOWN_DIGITS = 4  # significant digits of a number in a reason's text


def displayed(values: np.ndarray) -> np.ndarray:
    """Numbers as a reason shows them: rounded to SHOWN_DIGITS significant digits (so a
    column's texts are built once per shown value, not once per row); others unchanged."""
    values = np.asarray(values)
    if values.dtype.kind != "f":
        return values
    size = np.abs(values)
    with np.errstate(divide="ignore", invalid="ignore"):
        exponent = np.floor(np.log10(np.where(size > 0, size, 1.0)))
        scale = 10.0 ** (SHOWN_DIGITS - 1 - np.where(np.isfinite(exponent), exponent, 0.0))
        rounded = np.round(values * scale) / scale
    return np.where(np.isfinite(rounded), rounded, values)


def shown_values(values: np.ndarray) -> np.ndarray:
    """Raw values as a reason shows them: numbers with %g (SHOWN_DIGITS significant
    digits), yes/no for booleans, category levels as they are, "missing" for a null
    (vectorised: one call per column)."""
    values = np.asarray(values)
    if values.dtype == bool:
        return np.where(values, "yes", "no")
    if values.dtype.kind in "iuf":
        numbers = displayed(values.astype("float64"))
        return np.where(np.isnan(numbers), "missing", np.char.mod("%g", numbers))
    codes, levels = pd.factorize(values.astype(object), use_na_sentinel=True)
    shown = np.array([str(level) for level in levels] + ["missing"], dtype=object)
    return shown[codes]  # code -1 (a null) picks the last: "missing"


RAISES, LOWERS = " → raises risk", " → lowers risk"


def reason_text(column: str, value: Any, contribution: float) -> str:
    """One line an agent reads: "monthly_fee 19.99 → raises risk" (never against the sign)."""
    return f"{column} {shown_values(np.array([value]))[0]}{RAISES if contribution > 0 else LOWERS}"


def top_columns(contributions: np.ndarray, k: int) -> np.ndarray:
    """Per row, the column indexes of the `k` largest contributions by size, largest first
    (ties: the lower index first, as a stable sort would give)."""
    size = np.abs(contributions)
    rows = np.arange(len(size))
    picks = []
    for _ in range(min(k, size.shape[1])):
        j = size.argmax(axis=1)  # the first of equal maxima
        picks.append(j)
        size[rows, j] = -1.0
    return np.stack(picks, axis=1) if picks else np.zeros((len(size), 0), dtype=np.int64)


def reason_texts(
    explainer: Explainer, contributions: np.ndarray, frame: pd.DataFrame, k: int
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Many rows at once: the column index of each row's `k` largest contributions by size
    (n x k), their texts (k arrays; "" where a row has fewer non-zero contributions) and
    each row's first reason without its value as a code (2 x column + 1 if it raises risk;
    -1: none; `first_reason_names` names them). `frame` holds the rows' raw values of
    `explainer.columns`. A text is built once per distinct (shown value, direction) of a
    column, then picked for every row that has it."""
    n = len(contributions)
    order = top_columns(contributions, k)
    rows = np.arange(n)
    texts, first = [], np.full(n, -1, dtype=np.int64)
    for rank in range(order.shape[1]):
        index = order[:, rank]
        signed = contributions[rows, index]
        pick = np.zeros(n, dtype=np.int64)  # into `table`; 0 is the empty text
        table: list[Any] = [np.array([""], dtype=object)]
        offset = 1
        by_column = np.argsort(index, kind="stable")  # the rows of each column together
        bounds = np.searchsorted(index[by_column], np.arange(len(explainer.columns) + 1))
        for j, column in enumerate(explainer.columns):
            at = by_column[bounds[j] : bounds[j + 1]]
            at = at[signed[at] != 0]  # a zero contribution is never a reason
            if not len(at):
                continue
            raw = displayed(frame[column].to_numpy()[at])
            codes, levels = pd.factorize(raw, use_na_sentinel=True)
            shown = [*shown_values(np.asarray(levels)).tolist(), "missing"]
            codes[codes < 0] = len(shown) - 1  # a null: "missing"
            raises = signed[at] > 0
            table.append(np.array([f"{column} {v}{verb}" for verb in (LOWERS, RAISES)
                                   for v in shown], dtype=object))  # fmt: skip
            pick[at] = offset + raises * len(shown) + codes
            offset += 2 * len(shown)
            if rank == 0:
                first[at] = 2 * j + raises
        texts.append(np.concatenate(table)[pick])
    return order, texts, first


def first_reason_names(columns: tuple[str, ...]) -> list[str]:
    """The names of reason_texts' first-reason codes: "column lowers/raises risk"."""
    return [f"{c} {verb} risk" for c in columns for verb in ("lowers", "raises")]


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
