"""train.model: auto: a small, seeded cross-validated search over the estimators.

The candidates are fixed (no random draws, so the winner is the same on every machine):
the three estimators with their params.yaml settings (the forest with 100 trees),
sklearn's own defaults for HistGradientBoosting (the params were tuned on the course
data and underfit larger or cleaner tables), a deeper boosted model, and a stronger
and a weaker regularised logistic regression. Each is scored by ROC AUC over the same
stratified folds of the training split (uncalibrated: calibration is a monotone map
and does not change AUC).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel
from sklearn.model_selection import cross_val_score

from churn.model import build_pipeline, folds
from churn.params import HistGBParams, LogisticRegressionParams, TrainParams

log = logging.getLogger("churn.search")


@dataclass(frozen=True)
class Candidate:
    label: str
    model: str
    settings: BaseModel


@dataclass(frozen=True)
class SearchResult:
    winner: Candidate
    table: list[dict]  # one row per candidate: label, model, settings, cv mean/std, folds


def candidates(p: TrainParams) -> list[Candidate]:
    return [
        Candidate("hist_gb (params)", "hist_gb", p.hist_gb),
        Candidate("hist_gb (sklearn defaults)", "hist_gb", HistGBParams(
            learning_rate=0.1, max_iter=100, max_leaf_nodes=31, min_samples_leaf=20,
            l2_regularization=0.0)),
        Candidate("hist_gb (deeper, slower)", "hist_gb", HistGBParams(
            learning_rate=0.05, max_iter=300, max_leaf_nodes=15, min_samples_leaf=20,
            l2_regularization=1.0)),
        Candidate("logistic_regression (params)", "logistic_regression", p.logistic_regression),
        Candidate("logistic_regression (C=0.1)", "logistic_regression",
                  LogisticRegressionParams(C=0.1, max_iter=p.logistic_regression.max_iter)),
        # 100 trees: the forest is the slowest candidate by far and rarely wins on churn data
        Candidate("random_forest (100 trees)", "random_forest",
                  p.random_forest.model_copy(update={"n_estimators": 100})),
    ]  # fmt: skip


def search(
    spec: dict,
    x: pd.DataFrame,
    y: pd.Series,
    p: TrainParams,
    random_state: int,
    capped: list[str],
) -> SearchResult:
    """Score every candidate with the same folds; the best mean AUC wins (first on ties)."""
    splits = list(folds(p, random_state).split(x, y))
    table = []
    options = candidates(p)
    for k, option in enumerate(options, 1):
        pipeline = build_pipeline(spec, p, random_state, capped, option.model, option.settings,
                                  calibrate=False)  # fmt: skip
        scores = cross_val_score(pipeline, x, y, cv=splits, scoring="roc_auc")
        row = {
            "label": option.label,
            "model": option.model,
            "settings": option.settings.model_dump(),
            "roc_auc_cv_mean": round(float(np.mean(scores)), 6),
            "roc_auc_cv_std": round(float(np.std(scores)), 6),
            "folds": [round(float(s), 6) for s in scores],
        }
        table.append(row)
        log.info("[%d/%d] %-30s CV ROC AUC %.4f ± %.4f", k, len(options), option.label,
                 row["roc_auc_cv_mean"], row["roc_auc_cv_std"])  # fmt: skip
    best = max(range(len(table)), key=lambda i: (table[i]["roc_auc_cv_mean"], -i))
    log.info("auto: %s wins", options[best].label)
    return SearchResult(options[best], table)
