"""Model runtimes: each adopted one scores like the Pipeline within 1e-9 (checked at
load), and a runtime that cannot run a model, or scores it differently, falls back to
the exact path with the reason."""

from __future__ import annotations

import numpy as np
import pytest

from churn import runtimes
from churn.fastpath import compile_pipeline
from churn.model import build_pipeline, fit_pipeline
from churn.params import TrainParams
from tests.unit.test_model import SPEC, quirky_frame


def fitted(model: str, calibration: str):
    frame = quirky_frame(400, seed=5)
    x, y = frame.drop(columns="churn_label"), frame["churn_label"]
    p = TrainParams(model=model, calibration=calibration, random_forest={"n_estimators": 20})
    pipeline = fit_pipeline(build_pipeline(SPEC, p, 0), x, y)
    compiled = compile_pipeline(pipeline, x.head(100))
    rows = compiled.transform(*compiled.encode(x))
    return compiled, rows, pipeline.predict_proba(x[list(compiled.features)])[:, 1], x


@pytest.mark.parametrize("calibration", ["sigmoid", "isotonic", "none"])
@pytest.mark.parametrize(("model", "expected"), [("logistic_regression", "numpy"),
                                                 ("hist_gb", "treelite"),
                                                 ("random_forest", "treelite")])  # fmt: skip
def test_auto_adopts_the_compiled_runtime_and_it_scores_like_the_pipeline(
    model, expected, calibration
):
    compiled, rows, reference, _ = fitted(model, calibration)
    adopted, report = runtimes.adopt(compiled, rows[:200], reference[:200])
    assert report["name"] == adopted.runtime == expected, report
    assert report["fallback_reason"] is None
    # also on the rows the check did not see, one at a time as requests come
    assert np.abs(adopted.predict_transformed(rows) - reference).max() <= 1e-9
    assert abs(adopted.predict_transformed(rows[250:251])[0] - reference[250]) <= 1e-9


def test_onnx_runs_linear_models_and_cannot_convert_boosting_in_double_precision():
    compiled, rows, reference, _ = fitted("logistic_regression", "sigmoid")
    adopted, report = runtimes.adopt(compiled, rows, reference, "onnx")
    assert report["name"] == "onnx" and report["max_abs_diff"] <= 1e-9
    compiled, rows, reference, _ = fitted("hist_gb", "sigmoid")
    adopted, report = runtimes.adopt(compiled, rows, reference, "onnx")
    assert adopted.runtime == "sklearn" and adopted.scorer is not None
    assert report["fallback_reason"].startswith("onnx: skl2onnx cannot convert")
    assert np.array_equal(adopted.predict_transformed(rows), compiled.predict_transformed(rows))


def test_a_runtime_whose_scores_differ_falls_back_with_the_difference(monkeypatch):
    compiled, rows, reference, _ = fitted("logistic_regression", "none")
    exact = runtimes._RESPONSES["numpy"]
    monkeypatch.setitem(runtimes._RESPONSES, "numpy",
                        lambda est, method: (lambda r: exact(est, method)(r) + 1e-7))  # fmt: skip
    adopted, report = runtimes.adopt(compiled, rows, reference)
    assert adopted.runtime == "sklearn"
    assert "numpy: max |score - Pipeline score| 1e-07 > 1e-09" in report["fallback_reason"]
    assert "treelite cannot import LogisticRegression" in report["fallback_reason"]
    assert np.abs(adopted.predict_transformed(rows) - reference).max() <= 1e-9


def test_one_record_encodes_like_its_one_row_frame():
    import pandas as pd

    compiled, _, _, x = fitted("logistic_regression", "sigmoid")
    for i in range(30):  # quirky_frame has missing numbers and categories
        record = {k: (None if pd.isna(v) else v) for k, v in x.iloc[i].to_dict().items()}
        num, cat = compiled.encode_record(record)
        frame_num, frame_cat = compiled.encode(pd.DataFrame([record]))
        assert np.array_equal(num, frame_num, equal_nan=True)
        assert cat.tolist() == frame_cat.tolist()
