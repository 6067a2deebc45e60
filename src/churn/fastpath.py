"""A numpy request path compiled from the fitted Pipeline.

Per single-row call a ColumnTransformer costs milliseconds (pandas indexing, validation,
joblib dispatch) while the estimator on a numpy row costs well under one. This module
reads the fitted preprocessing parameters once (imputer medians, missing indicators,
scaler, one-hot categories, dropped constant columns) and applies them with numpy; a
calibrated estimator is called through its model and calibration map directly.
`compile_pipeline` checks the result equals `Pipeline.predict_proba` on sample rows and
refuses (returns None) for a Pipeline shape it does not know, so callers fall back.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churn import guarded
from churn.errors import RegistryError


@dataclass(frozen=True)
class CompiledModel:
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    kept: np.ndarray  # numeric columns the imputer kept (not all-missing in training)
    medians: np.ndarray
    indicator: np.ndarray  # numeric columns that get a missing indicator
    mean: np.ndarray | None
    scale: np.ndarray | None
    categories: tuple[dict[str, int], ...]  # per categorical: level -> position in its block
    widths: tuple[int, ...]  # one-hot block width per categorical
    defaults: tuple[int | None, ...]  # position of an unseen level (capped: "infrequent")
    support: np.ndarray
    estimator: Any
    runtime: str = "sklearn"  # what scores preprocessed rows (churn.runtimes.adopt)
    scorer: Any = None  # that runtime's scorer; None: the estimator's predict_proba
    linear: dict[str, Any] | None = None  # compiled.json's linear terms (no estimator then)

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric + self.categorical

    def encode(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Raw feature frame -> (float matrix of numeric columns, object matrix of categories)."""
        num = frame[list(self.numeric)].to_numpy(dtype="float64", na_value=np.nan)
        cat = frame[list(self.categorical)].to_numpy(dtype=object)
        return num, cat

    def encode_tuples(self, rows: list[tuple], columns: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Rows as tuples in `columns` order (a database's answer) -> the same matrices as
        `encode` of their frame, without pandas (~1 ms a request saved)."""
        at = {name: i for i, name in enumerate(columns)}
        numeric = [at[n] for n in self.numeric]
        num = np.array([[row[i] for i in numeric] for row in rows], dtype="float64")  # None: NaN
        cat = np.empty((len(rows), len(self.categorical)), dtype=object)
        for j, name in enumerate(self.categorical):
            cat[:, j] = [row[at[name]] for row in rows]
        return num.reshape(len(rows), len(numeric)), cat

    def encode_record(self, record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """One validated record -> the same matrices as `encode` of its one-row frame,
        without pandas (a DataFrame and its column selection cost ~0.5 ms a request)."""
        num = np.array([[np.nan if record[n] is None else record[n] for n in self.numeric]],
                       dtype="float64")  # fmt: skip
        cat = np.empty((1, len(self.categorical)), dtype=object)
        cat[0, :] = [record[c] for c in self.categorical]
        return num, cat

    def transform(self, num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """The Pipeline's preprocessing, in numpy."""
        values = num[:, self.kept]
        missing = np.isnan(values)
        values = np.where(missing, self.medians, values)
        parts = [values, np.isnan(num[:, self.indicator]).astype("float64")]
        if self.mean is not None:
            parts = [(np.hstack(parts) - self.mean) / self.scale]
        onehot = np.zeros((num.shape[0], sum(self.widths)))
        offset = 0
        for j, mapping in enumerate(self.categories):
            default = self.defaults[j]
            for i, value in enumerate(cat[:, j]):
                position = mapping.get(value if isinstance(value, str) else "missing", default)
                if position is not None:
                    onehot[i, offset + position] = 1.0
            offset += self.widths[j]
        return np.hstack([*parts, onehot])[:, self.support]

    def predict_encoded(self, num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        return self.predict_transformed(self.transform(num, cat))

    def predict_transformed(self, rows: np.ndarray) -> np.ndarray:
        if self.scorer is not None:
            return self.scorer(rows)
        return self.estimator.predict_proba(rows)[:, 1]


class CalibratedScores:
    """`CalibratedClassifierCV(ensemble=False).predict_proba` without its per-call overhead
    (~0.4 ms a row: response-method lookup, label encoding): the one calibrated model's
    scores through its calibration map, the same arithmetic in the same order."""

    def __init__(self, calibrated: Any) -> None:
        (inner,) = calibrated.calibrated_classifiers_
        if inner.method not in ("sigmoid", "isotonic") or len(calibrated.classes_) != 2:
            raise ValueError("unknown calibration")
        self.calibrated = calibrated
        self.method_name = inner.method
        self.estimator = inner.estimator
        self.calibrator = inner.calibrators[0]
        self.method = ("decision_function" if hasattr(self.estimator, "decision_function")
                       else "predict_proba")  # fmt: skip

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        scores = getattr(self.estimator, self.method)(rows)
        positive = self.calibrate(scores[:, 1] if scores.ndim == 2 else scores)
        return np.column_stack([1.0 - positive, positive])

    def calibrate(self, scores: np.ndarray) -> np.ndarray:
        """The calibration map on the model's scores: positive-class probabilities. The
        sigmoid map is `_SigmoidCalibration.predict`'s own expression, without its input
        check (~20 µs a call)."""
        if self.method_name == "sigmoid":
            from scipy.special import expit  # here: a compiled.json start never needs scipy

            positive = expit(-(self.calibrator.a_ * scores + self.calibrator.b_))
        else:
            positive = self.calibrator.predict(scores)
        positive[(positive > 1.0) & (positive <= 1.0 + 1e-5)] = 1.0
        return positive


def _final_estimator(estimator: Any) -> Any:
    if hasattr(estimator, "calibrated_classifiers_"):
        return CalibratedScores(estimator)
    return estimator


def _extract(pipeline: Any) -> CompiledModel:
    pre = pipeline.named_steps["preprocess"]
    by_name = {name: (tr, cols) for name, tr, cols in pre.transformers_ if name != "remainder"}
    num_pipe, numeric = by_name["num"]
    cat_pipe, categorical = by_name["cat"]
    imputer = num_pipe.named_steps["impute"]
    if imputer.strategy != "median" or set(num_pipe.named_steps) - {"impute", "scale"}:
        raise ValueError("unknown numeric branch")
    stats = imputer.statistics_
    kept = np.flatnonzero(~np.isnan(stats))
    indicator = (
        np.asarray(imputer.indicator_.features_, dtype=int)
        if imputer.indicator_ is not None
        else np.zeros(0, dtype=int)
    )
    scaler = num_pipe.named_steps.get("scale")
    onehot = cat_pipe.named_steps["onehot"]
    if onehot.drop_idx_ is not None or getattr(onehot, "_infrequent_enabled", False):
        raise ValueError("unknown one-hot options")
    categories = [{str(c): k for k, c in enumerate(cats)} for cats in onehot.categories_]
    widths = [len(c) for c in categories]
    defaults: list[int | None] = [None] * len(categories)
    capped: list[str] = []
    if "cat_capped" in by_name:
        capped_pipe, capped = by_name["cat_capped"]
        for mapping, width, default in _capped_blocks(capped_pipe.named_steps["onehot"]):
            categories.append(mapping)
            widths.append(width)
            defaults.append(default)
    return CompiledModel(
        numeric=tuple(numeric),
        categorical=tuple(categorical) + tuple(capped),
        kept=kept,
        medians=stats[kept],
        indicator=indicator,
        mean=None if scaler is None else scaler.mean_,
        scale=None if scaler is None else scaler.scale_,
        categories=tuple(categories),
        widths=tuple(widths),
        defaults=tuple(defaults),
        support=pipeline.named_steps["drop_constant"].get_support(),
        estimator=_final_estimator(pipeline.named_steps["model"]),
    )


UNSEEN = "\x00unseen level"


def _capped_blocks(encoder: Any) -> list[tuple[dict[str, int], int, int | None]]:
    """Per column of a one-hot encoder with infrequent levels: level -> position in the
    column's block, the block width, and where an unseen level goes. Read off the
    encoder's own transform, so grouping rules stay sklearn's (compile_pipeline checks)."""
    cats = encoder.categories_
    widths = [int(w) for w in encoder._n_features_outs]
    blocks, start = [], 0
    for j, levels in enumerate(cats):
        probe = [*levels.tolist(), UNSEEN]
        rows = np.array([[c[0] for c in cats]] * len(probe), dtype=object)
        rows[:, j] = probe
        names = getattr(encoder, "feature_names_in_", None)
        block = encoder.transform(rows if names is None else pd.DataFrame(rows, columns=names))
        block = block[:, start : start + widths[j]]
        hot = [int(np.argmax(row)) if row.any() else None for row in block]
        mapping = {str(level): pos for level, pos in zip(levels, hot[:-1], strict=True)
                   if pos is not None}  # fmt: skip
        blocks.append((mapping, widths[j], hot[-1]))
        start += widths[j]
    return blocks


def compile_pipeline(pipeline: Any, sample: pd.DataFrame, tolerance: float = 1e-9):
    """A CompiledModel equal to `pipeline` on `sample`, or None when it cannot be."""
    try:
        compiled = _extract(pipeline)
        num, cat = compiled.encode(sample)
        fast = compiled.predict_encoded(num, cat)
    except (KeyError, AttributeError, ValueError):
        return None
    slow = pipeline.predict_proba(sample[list(compiled.features)])[:, 1]
    if not np.allclose(fast, slow, rtol=0, atol=tolerance):
        return None
    return compiled


# --- compiled.json: the numpy request path of a linear model, without sklearn ----------
#
# Loading the skops file imports sklearn and scipy (~2 s of a 4 s cold start). For a
# (calibrated) logistic regression everything a request needs is a few arrays, so promote
# writes them next to the model in the content store once (mlflow/models/<sha256>/), with
# 500 sample rows and the Pipeline's own scores of them; later starts read the arrays and
# take them only if they reproduce those scores within 1e-9. Numbers only: no code runs
# from the file, and a file of another model (model_sha256) or format is ignored. promote
# writes it and records its sha256 in champion.json (compiled_sha256): a file whose bytes
# are not the recorded ones is never used.

COMPILED_FILE = "compiled.json"
COMPILED_FORMAT = 1


def linear_terms(compiled: CompiledModel) -> dict[str, Any] | None:
    """Coefficients, intercept and sigmoid calibration of a binary logistic regression
    (calibrated or not), or None for any other estimator."""
    if compiled.estimator is None:  # read from compiled.json: the terms it was written with
        return compiled.linear
    final, calibration = compiled.estimator, None
    if isinstance(final, CalibratedScores):
        if final.method_name != "sigmoid" or final.method != "decision_function":
            return None
        calibration = {"a": float(final.calibrator.a_), "b": float(final.calibrator.b_)}
        final = final.estimator
    coef = getattr(final, "coef_", None)
    if type(final).__name__ != "LogisticRegression" or coef is None or coef.shape[0] != 1:
        return None
    return {"coef": coef[0].tolist(), "intercept": float(final.intercept_[0]),
            "calibration": calibration}  # fmt: skip


def linear_scorer(terms: dict[str, Any]):
    """Positive-class probabilities of preprocessed rows from `linear_terms` (numpy only:
    the decision function, then the calibration's sigmoid or the logistic link)."""
    weights = np.asarray(terms["coef"], dtype="float64").reshape(-1, 1)
    intercept = float(terms["intercept"])
    calibration = terms["calibration"]

    def score(rows: np.ndarray) -> np.ndarray:
        decision = (rows @ weights + intercept).reshape(-1)
        if calibration is None:
            return 1.0 / (1.0 + np.exp(-decision))
        return 1.0 / (1.0 + np.exp(calibration["a"] * decision + calibration["b"]))

    return score


def _cell(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def compiled_payload(compiled: CompiledModel, model_sha256: str, num: np.ndarray,
                     cat: np.ndarray, reference: np.ndarray) -> dict[str, Any] | None:  # fmt: skip
    """What compiled.json holds for `compiled` (checked rows `num`/`cat` and the Pipeline's
    scores of them), or None when its estimator is not linear."""
    terms = linear_terms(compiled)
    if terms is None:
        return None
    return {
        "format": COMPILED_FORMAT,
        "model_sha256": model_sha256,
        "numeric": list(compiled.numeric),
        "categorical": list(compiled.categorical),
        "kept": compiled.kept.tolist(),
        "medians": compiled.medians.tolist(),
        "indicator": compiled.indicator.tolist(),
        "mean": None if compiled.mean is None else compiled.mean.tolist(),
        "scale": None if compiled.scale is None else compiled.scale.tolist(),
        "categories": list(compiled.categories),
        "widths": list(compiled.widths),
        "defaults": list(compiled.defaults),
        "support": compiled.support.tolist(),
        "linear": terms,
        "check": {
            "num": [[_cell(v) for v in row] for row in num.tolist()],
            "cat": [[_cell(v) for v in row] for row in cat.tolist()],
            "scores": reference.tolist(),
        },
    }


CHECK_ROWS = 500


def check_sample(frame: pd.DataFrame) -> pd.DataFrame:
    """The seeded rows a compiled path is checked on against its Pipeline."""
    return frame.sample(n=min(len(frame), CHECK_ROWS), random_state=0)


def compiled_for(pipeline: Any, sample: pd.DataFrame, model_sha256: str) -> dict[str, Any] | None:
    """compiled.json's payload for a fitted Pipeline, checked on `sample`; None when its
    shape or estimator has none."""
    compiled = compile_pipeline(pipeline, sample)
    if compiled is None:
        return None
    num, cat = compiled.encode(sample)
    reference = pipeline.predict_proba(sample[list(compiled.features)])[:, 1]
    return compiled_payload(compiled, model_sha256, num, cat, reference)


def write_compiled(path: Path, payload: dict[str, Any]) -> None:
    from churn.io import atomic_write_text

    atomic_write_text(path, json.dumps(payload, allow_nan=False) + "\n")


def compiled_sha256(path: Path) -> str:
    return hashlib.sha256(guarded.read_bytes(path)).hexdigest()


def read_compiled(
    path: Path, model_sha256: str, recorded_sha256: str | None
) -> tuple[CompiledModel, float, int]:
    """The CompiledModel of compiled.json with the numpy runtime, the largest difference
    from the Pipeline's recorded scores and the rows checked; ValueError says why not.

    The file is content-addressed: its sha256 must be the one promote recorded with the
    champion (champion.json's compiled_sha256), so an edit of its numbers, even one that
    keeps them consistent with its check scores, is refused."""
    if recorded_sha256 is None:
        raise ValueError(f"{path.name} is not recorded with the champion (no compiled_sha256)")
    try:
        data = guarded.read_bytes(path)
    except (OSError, RegistryError) as exc:
        raise ValueError(f"{path.name} unreadable ({exc})") from None
    found = hashlib.sha256(data).hexdigest()
    if found != recorded_sha256:
        raise ValueError(f"{path.name} has sha256 {found[:12]}…, the champion records "
                         f"{recorded_sha256[:12]}…")  # fmt: skip
    try:
        payload = guarded.parse(data, str(path))
    except RegistryError as exc:
        raise ValueError(f"{path.name} unreadable ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != COMPILED_FORMAT:
        raise ValueError(f"{path.name}: format is not {COMPILED_FORMAT}")
    if payload.get("model_sha256") != model_sha256:
        raise ValueError(f"{path.name} was written for another model")
    try:
        numeric, categorical = tuple(payload["numeric"]), tuple(payload["categorical"])
        compiled = CompiledModel(
            numeric=numeric,
            categorical=categorical,
            kept=np.asarray(payload["kept"], dtype=int),
            medians=np.asarray(payload["medians"], dtype="float64"),
            indicator=np.asarray(payload["indicator"], dtype=int),
            mean=None if payload["mean"] is None else np.asarray(payload["mean"], "float64"),
            scale=None if payload["scale"] is None else np.asarray(payload["scale"], "float64"),
            categories=tuple({str(k): int(v) for k, v in c.items()} for c in payload["categories"]),
            widths=tuple(int(w) for w in payload["widths"]),
            defaults=tuple(None if d is None else int(d) for d in payload["defaults"]),
            support=np.asarray(payload["support"], dtype=bool),
            estimator=None,
            runtime="numpy",
            scorer=linear_scorer(payload["linear"]),
            linear=payload["linear"],
        )
        check = payload["check"]
        num = np.array([[np.nan if v is None else v for v in row] for row in check["num"]],
                       dtype="float64").reshape(-1, len(numeric))  # fmt: skip
        cat = np.empty((len(num), len(categorical)), dtype=object)
        for i, row in enumerate(check["cat"]):
            cat[i, :] = row
        reference = np.asarray(check["scores"], dtype="float64")
        diff = float(np.max(np.abs(compiled.predict_encoded(num, cat) - reference)))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise ValueError(f"{path.name} malformed ({type(exc).__name__}: {exc})") from None
    if not diff <= 1e-9:  # also NaN
        raise ValueError(f"{path.name}: max |score - Pipeline score| {diff:.3g} > 1e-09")
    return compiled, diff, len(num)
