"""The numpy request path returns exactly the served Pipeline's scores, calibration too."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from churn.fastpath import (
    COMPILED_FILE,
    CalibratedScores,
    compile_pipeline,
    compiled_payload,
    compiled_sha256,
    read_compiled,
    write_compiled,
)
from churn.model import build_pipeline, fit_pipeline
from churn.params import TrainParams
from tests.unit.test_model import SPEC, quirky_frame


@pytest.mark.parametrize("calibration", ["sigmoid", "isotonic", "none"])
@pytest.mark.parametrize("model", ["hist_gb", "random_forest", "logistic_regression"])
def test_fast_path_scores_equal_the_pipeline_bit_for_bit(model, calibration):
    frame = quirky_frame(400, seed=5)
    x, y = frame.drop(columns="churn_label"), frame["churn_label"]
    p = TrainParams(model=model, calibration=calibration, random_forest={"n_estimators": 20})
    pipeline = fit_pipeline(build_pipeline(SPEC, p, 0), x, y)
    compiled = compile_pipeline(pipeline, x.head(100))
    assert compiled is not None
    assert isinstance(compiled.estimator, CalibratedScores) == (calibration != "none")
    slow = pipeline.predict_proba(x[list(compiled.features)])[:, 1]
    assert np.array_equal(compiled.predict_encoded(*compiled.encode(x)), slow)
    one = x.iloc[[7]]
    assert compiled.predict_encoded(*compiled.encode(one))[0] == slow[7]
    # rows as a database returns them (NULL: None; the online store in PostgreSQL)
    numeric = set(compiled.numeric)
    rows = [
        tuple(None if c in numeric and pd.isna(v) else v for c, v in zip(x.columns, r, strict=True))
        for r in x.itertuples(index=False, name=None)
    ]
    assert any(v is None for r in rows for v in r)
    assert np.array_equal(compiled.predict_encoded(*compiled.encode_tuples(rows, list(x.columns))),
                          slow)  # fmt: skip


def _fitted(model, calibration, seed=5):
    frame = quirky_frame(400, seed=seed)
    x, y = frame.drop(columns="churn_label"), frame["churn_label"]
    p = TrainParams(model=model, calibration=calibration)
    return fit_pipeline(build_pipeline(SPEC, p, 0), x, y), x


def _compiled_file(tmp_path, pipeline, sample, sha="a" * 64):
    compiled = compile_pipeline(pipeline, sample)
    num, cat = compiled.encode(sample)
    reference = pipeline.predict_proba(sample[list(compiled.features)])[:, 1]
    payload = compiled_payload(compiled, sha, num, cat, reference)
    if payload is not None:
        write_compiled(tmp_path / COMPILED_FILE, payload)
    return payload


@pytest.mark.parametrize("calibration", ["sigmoid", "none"])
def test_compiled_json_serves_a_logistic_regression_like_its_pipeline(tmp_path, calibration):
    pipeline, x = _fitted("logistic_regression", calibration)
    assert _compiled_file(tmp_path, pipeline, x.head(100)) is not None
    path = tmp_path / COMPILED_FILE
    loaded, diff, rows = read_compiled(path, "a" * 64, compiled_sha256(path))
    assert rows == 100 and diff <= 1e-9 and loaded.estimator is None
    unseen = quirky_frame(300, seed=9).drop(columns="churn_label")  # rows not in the file
    slow = pipeline.predict_proba(unseen[list(loaded.features)])[:, 1]
    assert np.max(np.abs(loaded.predict_encoded(*loaded.encode(unseen)) - slow)) <= 1e-9


@pytest.mark.parametrize("model, calibration",
                         [("hist_gb", "sigmoid"), ("random_forest", "none"),
                          ("logistic_regression", "isotonic")])  # fmt: skip
def test_only_linear_models_with_a_sigmoid_or_no_calibration_get_a_compiled_json(
    tmp_path, model, calibration
):
    pipeline, x = _fitted(model, calibration)
    assert _compiled_file(tmp_path, pipeline, x.head(50)) is None


def test_a_compiled_json_that_does_not_reproduce_its_scores_is_refused(tmp_path):
    pipeline, x = _fitted("logistic_regression", "sigmoid")
    payload = _compiled_file(tmp_path, pipeline, x.head(100))
    path = tmp_path / COMPILED_FILE

    def read(model_sha: str = "a" * 64):
        return read_compiled(path, model_sha, compiled_sha256(path))  # bytes as recorded

    with pytest.raises(ValueError, match="not recorded with the champion"):
        read_compiled(path, "a" * 64, None)
    with pytest.raises(ValueError, match="the champion records"):
        read_compiled(path, "a" * 64, "c" * 64)
    with pytest.raises(ValueError, match="written for another model"):
        read("b" * 64)
    payload["linear"]["coef"][0] += 1e-3  # one coefficient edited
    path.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match=r"> 1e-09"):
        read()
    path.write_text(json.dumps({**payload, "format": 0}))
    with pytest.raises(ValueError, match="format is not 1"):
        read()
    del payload["medians"]
    path.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="malformed"):
        read()
    path.write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        read()
