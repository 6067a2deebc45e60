"""The numpy request path returns exactly the served Pipeline's scores, calibration too."""

from __future__ import annotations

import numpy as np
import pytest

from churn.fastpath import CalibratedScores, compile_pipeline
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
