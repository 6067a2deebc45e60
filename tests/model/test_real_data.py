"""The quality bar on the real course data (../shared/data/streamflow, month_000), with
the default params: the model users get."""

from __future__ import annotations

import pandas as pd
import pytest

from churn.evaluate import compute_metrics
from churn.model import feature_names
from churn.params import parse_params
from churn.prepare import split
from churn.train import fit
from tests.conftest import SHARED_DATA
from tests.model.helpers import course_month, scores

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def default_model():
    """One fit of the default params on month_000's training split, shared by the tests
    (the `auto` search is the slowest fit in the suite)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data/streamflow is absent")
    params = parse_params({})
    frame, spec = course_month(SHARED_DATA)
    train, test = split(frame, params.prepare.test_size, params.random_state)
    return fit(train, spec, params), train, test, spec


def test_default_model_on_real_month_000_reaches_the_course_bar(default_model):
    """The course report got 0.827 with a random forest; the target here is 0.83."""
    trained, train, test, spec = default_model
    y = test["churn_label"].astype(int).to_numpy()
    auc = compute_metrics(y, scores(trained.model, test[feature_names(spec)]), 0.5,
                          len(train))["roc_auc"]  # fmt: skip
    assert auc >= 0.83, auc
    assert len(pd.unique(y)) == 2


def test_calibration_targets_on_real_month_000(default_model):
    """ECE <= 0.03, predicted rate within 2 points, Brier no worse than the same estimator
    (the one the default `auto` search chose, with its settings) unweighted and
    uncalibrated."""
    trained, train, test, spec = default_model
    y = test["churn_label"].astype(int).to_numpy()
    x = test[feature_names(spec)]
    calibrated = compute_metrics(y, scores(trained.model, x), 0.5, 1)
    chosen = trained.summary["model"]
    plain = parse_params({"train": {"model": chosen, chosen: trained.summary["settings"],
                                    "class_weight": "none", "calibration": "none"}})  # fmt: skip
    unweighted = compute_metrics(y, scores(fit(train, spec, plain).model, x), 0.5, 1)
    assert calibrated["ece"] <= 0.03, calibrated
    assert abs(calibrated["predicted_churn_rate"] - calibrated["label_rate"]) <= 0.02
    assert calibrated["brier"] <= unweighted["brier"] + 1e-9, (calibrated, unweighted)
