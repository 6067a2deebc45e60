"""train.model: auto against reference models, and the seeded sample above fit_max_rows."""

from __future__ import annotations

import numpy as np

from churn.evaluate import compute_metrics
from churn.model import feature_names
from churn.params import parse_params
from churn.prepare import split
from churn.train import fit
from tests.model.helpers import MODELS, scores, training_data


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
