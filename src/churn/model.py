"""The sklearn Pipeline and the feature contract the API validates against."""

from __future__ import annotations

import numpy as np
import pandas as pd
import sklearn
from pydantic import BaseModel
from sklearn.base import ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.feature_selection import VarianceThreshold
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from churn import binning, modelfile
from churn.params import TrainParams

MISSING = "missing"
binning.install()  # HistGradientBoosting's weighted binning in one pass a column, same bytes


def feature_names(spec: dict) -> list[str]:
    return [f["name"] for f in spec["features"]]


def build_estimator(
    p: TrainParams, random_state: int, model: str | None = None, settings: BaseModel | None = None
) -> ClassifierMixin:
    """The estimator named by `model` (default: params' train.model) with `settings`
    (default: its params block)."""
    model = model or p.model
    h = settings or getattr(p, model)
    class_weight = None if p.class_weight == "none" else "balanced"
    if model == "hist_gb":
        return HistGradientBoostingClassifier(
            learning_rate=h.learning_rate,
            max_iter=h.max_iter,
            max_leaf_nodes=h.max_leaf_nodes,
            max_depth=h.max_depth,
            min_samples_leaf=h.min_samples_leaf,
            l2_regularization=h.l2_regularization,
            class_weight=class_weight,
            early_stopping=False,
            random_state=random_state,
        )
    if model == "random_forest":
        return RandomForestClassifier(
            n_estimators=h.n_estimators,
            max_depth=h.max_depth,
            min_samples_leaf=h.min_samples_leaf,
            max_features=h.max_features,
            class_weight=class_weight,
            n_jobs=1,  # threads sum tree votes in any order: the last bits of a score vary
            random_state=random_state,
        )
    return LogisticRegression(
        C=h.C, max_iter=h.max_iter, class_weight=class_weight, random_state=random_state
    )


def folds(p: TrainParams, random_state: int) -> StratifiedKFold:
    """The one fold split of the training data: calibration, CV metrics and the search."""
    return StratifiedKFold(n_splits=p.cv_folds, shuffle=True, random_state=random_state)


def calibrated(estimator: ClassifierMixin, p: TrainParams, random_state: int) -> ClassifierMixin:
    """Scores that are probabilities: a sigmoid (or isotonic) map fitted on out-of-fold
    scores, then the estimator refitted on all rows (ensemble=False: one model to serve).
    Class weighting buys ranking on rare churners but inflates raw scores (40 % predicted
    where 27 % churn); the map takes that back out."""
    if p.calibration == "none":
        return estimator
    return CalibratedClassifierCV(
        estimator, method=p.calibration, cv=folds(p, random_state), ensemble=False
    )


def build_pipeline(
    spec: dict,
    p: TrainParams,
    random_state: int,
    capped: list[str] | None = None,
    model: str | None = None,
    settings: BaseModel | None = None,
    calibrate: bool = True,
) -> Pipeline:
    """Preprocessing for the data's quirks + the estimator chosen in params.

    Numbers and booleans: median imputation with missing indicators (an empty
    plan_stream_* means "no internet"); categories: missing -> "missing" (both None
    and NaN), one-hot, unknown ignored; constant columns dropped. The `capped`
    categoricals keep their `train.max_categories - 1` most frequent levels; the rest,
    and levels never seen, share one "infrequent" column (a 2 600-level surname would
    otherwise make a batch ~100x slower, and the API would refuse every new name).
    The estimator is `calibrated` unless `calibrate` is False or params say none.
    """
    model = model or p.model
    capped = capped or []
    numeric = [f["name"] for f in spec["features"] if f["kind"] in ("numeric", "bool")]
    categorical = [f["name"] for f in spec["features"]
                   if f["kind"] == "category" and f["name"] not in capped]  # fmt: skip
    num_steps: list = [("impute", SimpleImputer(strategy="median", add_indicator=True))]
    if model == "logistic_regression":
        num_steps.append(("scale", StandardScaler()))
    cat_steps = [
        # NaN first: the None imputer refuses NaN input, the NaN imputer passes None through
        ("nan", SimpleImputer(strategy="constant", fill_value=MISSING)),
        ("none", SimpleImputer(missing_values=None, strategy="constant", fill_value=MISSING)),
        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
    ]
    branches = [("num", Pipeline(num_steps), numeric), ("cat", Pipeline(cat_steps), categorical)]
    if capped:
        capped_steps = [*cat_steps[:2], ("onehot", OneHotEncoder(
            handle_unknown="infrequent_if_exist", max_categories=p.max_categories,
            sparse_output=False))]  # fmt: skip
        branches.append(("cat_capped", Pipeline(capped_steps), capped))
    preprocess = ColumnTransformer(branches, remainder="drop", verbose_feature_names_out=False)
    estimator = build_estimator(p, random_state, model, settings)
    if calibrate:
        estimator = calibrated(estimator, p, random_state)
    return Pipeline(
        [
            ("preprocess", preprocess),
            ("drop_constant", VarianceThreshold(0.0)),
            ("model", estimator),
        ]
    )


# Rows scored per predict_proba call: the Pipeline's transformed copy of a 10 M-row frame
# (imputed numbers, indicators, one-hot columns, float64) would take ~3 GB at once.
SCORE_BLOCK_ROWS = 262_144


def churn_scores(model: Pipeline, frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    """Churn probabilities of every row (predict_proba[:, 1]), a block of rows at a time;
    every row's score is computed alone, so the blocks do not change it."""
    blocks = [model.predict_proba(frame.iloc[start:start + SCORE_BLOCK_ROWS][names])[:, 1]
              for start in range(0, max(len(frame), 1), SCORE_BLOCK_ROWS)]  # fmt: skip
    return np.concatenate(blocks)


def fit_pipeline(pipeline: Pipeline, x: pd.DataFrame, y: pd.Series) -> Pipeline:
    """Fit, then drop machine-specific state (thread counts; see churn.modelfile)."""
    pipeline.fit(x, y)
    return modelfile.normalise(pipeline)


def observed_features(spec: dict, frame: pd.DataFrame) -> list[dict]:
    """What the contract says of each feature's training values: nullable, the categories,
    min/max/constant/non_negative of numbers. The values of a frame cut in parts give
    the whole frame's through `merge_observed`."""
    features = []
    for f in spec["features"]:
        values = frame[f["name"]]
        entry: dict = {
            "name": f["name"],
            "kind": f["kind"],
            "dtype": "string" if f["kind"] == "category" else "float64",
            "nullable": bool(values.isna().any()),
        }
        if f["kind"] == "category":
            entry["categories"] = sorted(values.dropna().astype(str).unique().tolist())
        else:
            present = values.dropna().to_numpy(dtype=float)
            _ranged(entry, float(np.min(present)) if present.size else None,
                    float(np.max(present)) if present.size else None)  # fmt: skip
        features.append(entry)
    return features


def _ranged(entry: dict, low: float | None, high: float | None) -> None:
    entry["min"], entry["max"] = low, high
    entry["constant"] = low is not None and low == high
    # never negative in training (counts, money): the API refuses a negative value
    entry["non_negative"] = low is not None and low >= 0


def merge_observed(parts: list[list[dict]]) -> list[dict]:
    """`observed_features` of the rows of all `parts` (each the observed of some rows)."""
    merged = []
    for entries in zip(*parts, strict=True):
        entry = {**entries[0], "nullable": any(e["nullable"] for e in entries)}
        if "categories" in entry:
            entry["categories"] = sorted({c for e in entries for c in e["categories"]})
        else:
            lows = [e["min"] for e in entries if e["min"] is not None]
            highs = [e["max"] for e in entries if e["max"] is not None]
            _ranged(entry, min(lows) if lows else None, max(highs) if highs else None)
        merged.append(entry)
    return merged


def capped_of(observed: list[dict], max_categories: int) -> list[str]:
    """Categorical features with more training levels than `max_categories`."""
    return [e["name"] for e in observed
            if "categories" in e and len(e["categories"]) > max_categories]  # fmt: skip


def feature_contract(
    spec: dict, train: pd.DataFrame | list[dict], model_name: str, threshold: float,
    capped: tuple = (),
) -> dict:  # fmt: skip
    """Names, kinds, dtypes, categories and observed ranges of the model's inputs (`train`:
    the training rows, or their `observed_features`)."""
    observed = observed_features(spec, train) if isinstance(train, pd.DataFrame) else train
    features = [{**e, "unseen_levels": "infrequent"} if e["name"] in capped else dict(e)
                for e in observed]  # fmt: skip
    return {
        "id": spec["id"],
        "label": spec["label"],
        "as_of": spec["as_of"],
        "model": model_name,
        "threshold": threshold,
        "sklearn_version": sklearn.__version__,
        "features": features,
    }


def pandas_sample(n_rows: int, size: int, seed: int) -> np.ndarray:
    """The row numbers `DataFrame.sample(n=size, random_state=seed)` picks, in its order."""
    return np.random.RandomState(seed).choice(n_rows, size=size, replace=False)


def seeded_rows(n_rows: int, max_rows: int, seed: int) -> np.ndarray | None:
    """`pandas_sample` of at most max_rows rows; None: all of them, as they are."""
    return None if n_rows <= max_rows else pandas_sample(n_rows, max_rows, seed)


def sample_rows(
    x: pd.DataFrame, y: pd.Series, max_rows: int, random_state: int
) -> tuple[pd.DataFrame, pd.Series]:
    """A seeded, stratified sample of at most `max_rows` rows (all rows when fewer)."""
    keep = sample_index(y, max_rows, random_state)
    return (x, y) if keep is None else (x.iloc[keep], y.iloc[keep])


def sample_index(y: pd.Series, max_rows: int | None, random_state: int) -> np.ndarray | None:
    """The sorted row numbers of `sample_rows`' sample; None: every row."""
    if max_rows is None or len(y) <= max_rows:
        return None
    keep, _ = train_test_split(
        np.arange(len(y)), train_size=max_rows, random_state=random_state, stratify=y
    )
    return np.sort(keep)


def out_of_fold(
    fitted: Pipeline,
    base: Pipeline,
    x: pd.DataFrame,
    y: pd.Series,
    p: TrainParams,
    random_state: int,
) -> tuple[np.ndarray, list[float]]:
    """Calibrated out-of-fold churn probabilities and the ROC AUC of each fold.

    `base` is the uncalibrated Pipeline; each fold's scores go through the calibration
    map of `fitted` (itself learnt on out-of-fold scores), so the probabilities are what
    the served model would have said of users it never saw.
    """
    final = fitted.named_steps["model"]
    is_calibrated = hasattr(final, "calibrated_classifiers_")
    # the scores the calibration map was learnt on: decision_function where there is one
    method = ("decision_function" if is_calibrated and hasattr(base.named_steps["model"],
              "decision_function") else "predict_proba")  # fmt: skip
    splits = list(folds(p, random_state).split(x, y))
    raw = cross_val_predict(base, x, y, cv=splits, method=method)
    raw = raw[:, 1] if raw.ndim == 2 else raw
    probability = (
        final.calibrated_classifiers_[0].calibrators[0].predict(raw) if is_calibrated else raw
    )
    probability = np.clip(np.asarray(probability, dtype=float), 0.0, 1.0)
    labels = y.to_numpy()
    per_fold = [float(roc_auc_score(labels[test], probability[test])) for _, test in splits]
    return probability, per_fold
