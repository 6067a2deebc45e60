"""Model runtimes for the request path: what turns a preprocessed row into a score.

`sklearn` is the exact path: the estimator's own `predict_proba` (for a calibrated model,
its one model and calibration map, `fastpath.CalibratedScores`). It pays sklearn's
per-call overhead (input validation, response-method lookup): 0.2-0.6 ms for one row,
more than everything else in a request. The others compute the same numbers faster:

- `numpy`: linear models as one matrix product (the expression sklearn evaluates).
- `treelite`: tree ensembles (histogram boosting, random forests) through treelite's
  interpreter (GTIL) in float64.
- `onnx`: the estimator converted by skl2onnx with double-precision inputs, run by ONNX
  Runtime on one thread. Never picked by `auto`: importing skl2onnx alone takes ~2 s of
  cold start, and skl2onnx cannot convert histogram boosting to double precision.

`adopt` tries the wanted runtime (`auto`: numpy, then treelite) on sample rows and keeps it
only when its scores equal the Pipeline's within 1e-9; otherwise the exact path serves and
the reason is reported (`/model` runtime, the serve log).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from churn.fastpath import CalibratedScores, CompiledModel

RUNTIMES = ("auto", "numpy", "treelite", "onnx", "sklearn")
AUTO = ("numpy", "treelite")
TOLERANCE = 1e-9

Scorer = Callable[[np.ndarray], np.ndarray]


class Unsupported(Exception):
    """This runtime cannot run this estimator (the message says why)."""


def _positive(out: Any, n: int) -> np.ndarray:
    return np.asarray(out, dtype="float64").reshape(n, -1)[:, -1]


def _numpy_response(estimator: Any, method: str) -> Scorer:
    coef = getattr(estimator, "coef_", None)
    if coef is None or coef.ndim != 2 or coef.shape[0] != 1:
        raise Unsupported(f"numpy runs binary linear models, not {type(estimator).__name__}")
    weights, intercept = coef.T.copy(), estimator.intercept_

    def decision(rows: np.ndarray) -> np.ndarray:
        return (rows @ weights + intercept).reshape(-1)

    if method == "decision_function":
        return decision
    from scipy.special import expit

    return lambda rows: expit(decision(rows))


def _treelite_response(estimator: Any, method: str) -> Scorer:
    try:
        import treelite
        import treelite.gtil
    except ImportError as exc:
        raise Unsupported(f"treelite not installed ({exc})") from None
    try:
        model = treelite.sklearn.import_model(estimator)
    except Exception as exc:  # treelite raises its own errors for estimators it lacks
        raise Unsupported(f"treelite cannot import {type(estimator).__name__}: {exc}") from None
    margin = method == "decision_function"
    return lambda rows: _positive(treelite.gtil.predict(model, rows, pred_margin=margin),
                                  len(rows))  # fmt: skip


def _onnx_scorer(estimator: Any, width: int) -> Scorer:
    try:
        import onnxruntime
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import DoubleTensorType
    except ImportError as exc:
        raise Unsupported(f"onnxruntime/skl2onnx not installed ({exc})") from None
    try:
        graph = to_onnx(estimator, initial_types=[("X", DoubleTensorType([None, width]))],
                        options={id(estimator): {"zipmap": False}},
                        target_opset={"": 18, "ai.onnx.ml": 3})  # fmt: skip
    except Exception as exc:  # skl2onnx: no converter, or none for double precision
        first = str(exc).splitlines()[0][:160]
        raise Unsupported(f"skl2onnx cannot convert {type(estimator).__name__}: {first}") from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(graph.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])  # fmt: skip
    output = session.get_outputs()[1].name  # probabilities (the first is the label)
    return lambda rows: _positive(session.run([output], {"X": rows})[0], len(rows))


_RESPONSES = {"numpy": _numpy_response, "treelite": _treelite_response}


def scorer(compiled: CompiledModel, runtime: str) -> Scorer:
    """Positive-class scores of preprocessed rows through `runtime` (raises Unsupported)."""
    final = compiled.estimator
    if runtime == "sklearn":
        return lambda rows: final.predict_proba(rows)[:, 1]
    if runtime == "onnx":
        source = final.calibrated if isinstance(final, CalibratedScores) else final
        return _onnx_scorer(source, int(np.count_nonzero(compiled.support)))
    if runtime not in _RESPONSES:
        raise Unsupported(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
    if isinstance(final, CalibratedScores):
        response = _RESPONSES[runtime](final.estimator, final.method)
        return lambda rows: final.calibrate(response(rows))
    return _RESPONSES[runtime](final, "predict_proba")


def adopt(
    compiled: CompiledModel, rows: np.ndarray, reference: np.ndarray, wanted: str = "auto",
) -> tuple[CompiledModel, dict[str, Any]]:  # fmt: skip
    """`compiled` with the first runtime of `wanted` whose scores on `rows` (preprocessed)
    equal `reference` (the Pipeline's) within 1e-9, else the exact path; and a report."""
    tried: dict[str, str] = {}
    candidates = AUTO if wanted == "auto" else (wanted,)
    for name in [*(c for c in candidates if c != "sklearn"), "sklearn"]:
        try:
            fn = scorer(compiled, name)
            diff = float(np.max(np.abs(fn(rows) - reference)))
        except Unsupported as exc:
            tried[name] = str(exc)
            continue
        if not diff <= TOLERANCE and name != "sklearn":  # also NaN
            tried[name] = f"max |score - Pipeline score| {diff:.3g} > {TOLERANCE:g}"
            continue
        tried[name] = f"max |score - Pipeline score| {diff:.3g} on {len(rows)} rows"
        fallback = None
        if name == "sklearn" and wanted != "sklearn":
            fallback = "; ".join(f"{k}: {v}" for k, v in tried.items() if k != "sklearn")
        report = {"name": name, "wanted": wanted, "checked_rows": len(rows),
                  "max_abs_diff": diff, "fallback_reason": fallback, "tried": tried}  # fmt: skip
        return dataclasses.replace(compiled, runtime=name, scorer=fn), report
    raise AssertionError("the sklearn runtime always builds")  # pragma: no cover
