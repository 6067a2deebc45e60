"""Behavioural tests of trained models (Made-With-ML style): directional expectations,
invariances and minimum functionality, plus the quality bar on the real course data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churn import ingest, synthetic
from churn.evaluate import compute_metrics
from churn.model import feature_names
from churn.params import parse_params
from churn.prepare import build_features, feature_spec, join_snapshot, split
from churn.schema import COURSE_TABLE_NAMES
from churn.train import fit

MODELS = ["hist_gb", "random_forest", "logistic_regression"]


def frame_and_spec(raw_tables, files, as_of):
    """Validate, join and featurise one snapshot the way ingest + prepare do."""
    typed = ingest.validate_snapshot(raw_tables, files, 0.05)
    kinds = ingest.feature_kinds(typed)
    frame = build_features(join_snapshot(typed), kinds)
    spec = {"id": "user_id", "label": "churn_label", "as_of": as_of,
            "features": feature_spec(kinds)}  # fmt: skip
    return frame, spec


def training_data(params):
    as_of, tables = next(synthetic.generate(params.ingest.synthetic))
    return frame_and_spec(tables, {name: f"synthetic/{name}" for name in tables}, as_of)


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


def scores(model, frame):
    return model.predict_proba(frame)[:, 1]


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


@pytest.mark.realdata
def test_default_model_on_real_month_000_reaches_the_course_bar(shared_data):
    """The course report got 0.827 with a random forest; the target here is 0.83."""
    params = parse_params({})  # the defaults: the model users get
    paths = {name: shared_data / "month_000" / f"{name}.csv" for name in COURSE_TABLE_NAMES}
    raw = {name: ingest.read_table_file(path) for name, path in paths.items()}
    frame, spec = frame_and_spec(raw, {k: str(v) for k, v in paths.items()}, "2024-01-31")
    train, test = split(frame, params.prepare.test_size, params.random_state)
    model = fit(train, spec, params).model
    y = test["churn_label"].astype(int).to_numpy()
    auc = compute_metrics(y, scores(model, test[feature_names(spec)]), 0.5, len(train))["roc_auc"]
    assert auc >= 0.83, auc
    assert len(pd.unique(y)) == 2


def test_probabilities_are_calibrated_despite_class_weighting(trained):
    """class_weight: balanced alone predicted a 40 % churn rate where 27 % churn; the
    calibration map must bring the mean prediction to the observed rate."""
    model, test, spec = trained
    y = test["churn_label"].astype(int).to_numpy()
    metrics = compute_metrics(y, scores(model, test[feature_names(spec)]), 0.5, 1)
    assert abs(metrics["predicted_churn_rate"] - metrics["label_rate"]) <= 0.02, metrics
    assert metrics["ece"] <= max(0.03, 2 * metrics["ece_noise_floor"]), metrics


def course_month(shared_data, month="month_000", as_of="2024-01-31"):
    paths = {name: shared_data / month / f"{name}.csv" for name in COURSE_TABLE_NAMES}
    raw = {name: ingest.read_table_file(path) for name, path in paths.items()}
    return frame_and_spec(raw, {k: str(v) for k, v in paths.items()}, as_of)


@pytest.mark.realdata
def test_calibration_targets_on_real_month_000(shared_data):
    """ECE <= 0.03, predicted rate within 2 points, Brier no worse than an unweighted,
    uncalibrated model's (the issue's targets), with the default params."""
    params = parse_params({})
    frame, spec = course_month(shared_data)
    train, test = split(frame, params.prepare.test_size, params.random_state)
    y = test["churn_label"].astype(int).to_numpy()
    x = test[feature_names(spec)]
    calibrated = compute_metrics(y, scores(fit(train, spec, params).model, x), 0.5, 1)
    plain = parse_params({"train": {"class_weight": "none", "calibration": "none"}})
    unweighted = compute_metrics(y, scores(fit(train, spec, plain).model, x), 0.5, 1)
    assert calibrated["ece"] <= 0.03, calibrated
    assert abs(calibrated["predicted_churn_rate"] - calibrated["label_rate"]) <= 0.02
    assert calibrated["brier"] <= unweighted["brier"] + 1e-9, (calibrated, unweighted)


def test_auto_search_reaches_the_default_boosting_and_a_scaled_logistic_regression():
    """train.model: auto must be within 0.005 test AUC of a default (sklearn)
    HistGradientBoosting and of a scaled LogisticRegression on the same split."""
    params = parse_params({"ingest": {"synthetic": {"n_users": 3000, "n_months": 1}},
                           "train": {"model": "auto", "threshold": 0.5}})  # fmt: skip
    frame, spec = training_data(params)
    train, test = split(frame, 0.25, params.random_state)
    y = test["churn_label"].astype(int).to_numpy()
    x = test[feature_names(spec)]
    auto = fit(train, spec, params)
    assert len(auto.summary["search"]["candidates"]) >= 5
    assert auto.summary["model"] in MODELS
    auc = compute_metrics(y, scores(auto.model, x), 0.5, 1)["roc_auc"]
    references = {
        "hist_gb": {"hist_gb": {"learning_rate": 0.1, "max_leaf_nodes": 31,
                                "min_samples_leaf": 20, "l2_regularization": 0.0}},
        "logistic_regression": {},
    }  # fmt: skip
    for model, settings in references.items():
        ref = parse_params({"train": {"model": model, "threshold": 0.5, **settings}})
        ref_auc = compute_metrics(y, scores(fit(train, spec, ref).model, x), 0.5, 1)["roc_auc"]
        assert auc >= ref_auc - 0.005, (model, auc, ref_auc)


def test_the_served_model_is_fitted_on_a_seeded_sample_of_a_table_above_fit_max_rows():
    def trained(fit_max_rows):
        train = {"model": "hist_gb", "fit_max_rows": fit_max_rows}
        params = parse_params({"ingest": {"synthetic": {"n_users": 3000, "n_months": 1}},
                               "train": train})  # fmt: skip
        frame, spec = training_data(params)
        result = fit(frame, spec, params)
        return result, scores(result.model, frame[feature_names(spec)])

    everything, all_scores = trained(None)
    sampled, sampled_scores = trained(1000)
    _, again_scores = trained(1000)
    assert everything.summary["rows"] == everything.summary["fit_rows"] == 3000
    assert sampled.summary["rows"] == 3000 and sampled.summary["fit_rows"] == 1000
    assert np.array_equal(sampled_scores, again_scores)  # the sample is seeded
    assert not np.array_equal(sampled_scores, all_scores)
    assert trained(3000)[0].summary["fit_rows"] == 3000  # at the limit: every row
