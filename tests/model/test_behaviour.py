"""Behavioural tests of trained models (Made-With-ML style): directional expectations,
invariances, minimum functionality and calibration, for each estimator kind. The quality
bar on the real course data is in test_real_data.py, the auto search in test_search.py
(separate files: two test processes can run them side by side)."""

from __future__ import annotations

import numpy as np
import pytest

from churn.evaluate import compute_metrics
from churn.model import feature_names
from churn.params import parse_params
from churn.prepare import split
from churn.train import fit
from tests.model.helpers import MODELS, scores, training_data


@pytest.fixture(scope="module", params=MODELS)
def trained(request):
    params = parse_params(
        {
            "ingest": {"synthetic": {"n_users": 4000, "n_months": 1}},
            "train": {"model": request.param, "random_forest": {"n_estimators": 100}},
        }
    )
    frame, spec = training_data(params)
    train, test = split(frame, 0.25, params.random_state)
    model = fit(train, spec, params).model
    return model, test, spec


def test_directional_more_failed_payments_raise_mean_churn(trained):
    model, test, spec = trained
    x = test[feature_names(spec)]
    worse = x.assign(failed_payments_90d=x["failed_payments_90d"] + 2)
    assert scores(model, worse).mean() > scores(model, x).mean() + 0.02


def test_directional_longer_contracts_lower_mean_churn(trained):
    model, test, spec = trained
    x = test[feature_names(spec)]
    m2m = scores(model, x.assign(contract_type="Month-to-month")).mean()
    two_year = scores(model, x.assign(contract_type="Two year")).mean()
    assert two_year < m2m - 0.02


def test_invariance_to_the_constant_column_and_to_user_ids(trained):
    model, test, _ = trained
    frame = test.drop(columns="churn_label")  # user_id included, as the API would pass it
    base = scores(model, frame)
    assert np.array_equal(base, scores(model, frame.assign(avg_session_mins_7d=99.0)))
    renamed = frame.assign(user_id=[f"other-{i}" for i in range(len(frame))])
    assert np.array_equal(base, scores(model, renamed))


def test_minimum_functionality_obvious_churner_scores_above_obvious_stayer(trained):
    model, test, spec = trained
    typical = test[feature_names(spec)].iloc[[0]]
    churner = typical.assign(
        contract_type="Month-to-month", months_active=1.0, net_service="Fiber optic",
        failed_payments_90d=3.0, support_tickets_90d=4.0, watch_hours_30d=5.0,
        rebuffer_events_7d=8.0, paperless_billing=1.0,
    )  # fmt: skip
    stayer = typical.assign(
        contract_type="Two year", months_active=70.0, net_service="DSL",
        failed_payments_90d=0.0, support_tickets_90d=0.0, watch_hours_30d=45.0,
        rebuffer_events_7d=0.0, has_dependents=1.0,
    )  # fmt: skip
    assert scores(model, churner)[0] > 0.6
    assert scores(model, stayer)[0] < 0.2


def test_model_beats_chance_clearly_on_synthetic_labels(trained):
    model, test, spec = trained
    y = test["churn_label"].astype(int).to_numpy()
    metrics = compute_metrics(y, scores(model, test[feature_names(spec)]), 0.5, 1)
    assert metrics["roc_auc"] > 0.85


def test_probabilities_are_calibrated_despite_class_weighting(trained):
    """class_weight: balanced alone predicted a 40 % churn rate where 27 % churn; the
    calibration map must bring the mean prediction to the observed rate."""
    model, test, spec = trained
    y = test["churn_label"].astype(int).to_numpy()
    metrics = compute_metrics(y, scores(model, test[feature_names(spec)]), 0.5, 1)
    assert abs(metrics["predicted_churn_rate"] - metrics["label_rate"]) <= 0.02, metrics
    assert metrics["ece"] <= max(0.03, 2 * metrics["ece_noise_floor"]), metrics
