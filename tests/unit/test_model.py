import numpy as np
import pandas as pd
import pytest

from churn.model import build_pipeline, feature_contract, fit_pipeline
from churn.params import TrainParams

SPEC = {
    "id": "user_id",
    "label": "churn_label",
    "as_of": "2024-01-31",
    "features": [
        {"name": "hours", "kind": "numeric"},
        {"name": "constant", "kind": "numeric"},
        {"name": "tv", "kind": "bool"},
        {"name": "plan", "kind": "category"},
    ],
}


def quirky_frame(n=200, seed=0):
    rng = np.random.default_rng(seed)
    hours = rng.normal(30, 5, n)
    tv = rng.choice([0.0, 1.0, np.nan], n)
    plan = rng.choice(np.array(["basic", "premium", None, np.nan], dtype=object), n)
    label = (hours + rng.normal(0, 3, n) < 28).astype(int)
    return pd.DataFrame(
        {"hours": hours, "constant": 29.14, "tv": tv, "plan": plan, "churn_label": label}
    )


@pytest.mark.parametrize("model", ["hist_gb", "random_forest", "logistic_regression"])
def test_every_estimator_copes_with_missing_values_categories_and_a_constant(model):
    frame = quirky_frame()
    params = TrainParams(model=model, random_forest={"n_estimators": 20})
    pipeline = build_pipeline(SPEC, params, random_state=0)
    x = frame[["hours", "constant", "tv", "plan"]]
    pipeline.fit(x, frame["churn_label"])
    scores = pipeline.predict_proba(x)[:, 1]
    assert np.isfinite(scores).all()
    # an unseen category and a missing value at predict time do not fail
    odd = x.head(2).assign(plan=["gold", None], tv=[np.nan, np.nan])
    assert np.isfinite(pipeline.predict_proba(odd)).all()
    # the constant column is dropped before the estimator
    kept = pipeline.named_steps["drop_constant"].get_support()
    assert kept.sum() == len(kept) - 1


def test_same_random_state_gives_the_same_model():
    frame = quirky_frame()
    x, y = frame.drop(columns="churn_label"), frame["churn_label"]
    params = TrainParams(model="random_forest", random_forest={"n_estimators": 10})
    a = fit_pipeline(build_pipeline(SPEC, params, 5), x, y).predict_proba(x)
    b = fit_pipeline(build_pipeline(SPEC, params, 5), x, y).predict_proba(x)
    c = fit_pipeline(build_pipeline(SPEC, params, 6), x, y).predict_proba(x)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_feature_contract_records_kinds_ranges_and_categories():
    frame = quirky_frame()
    contract = feature_contract(SPEC, frame, "hist_gb", 0.5)
    by_name = {f["name"]: f for f in contract["features"]}
    assert by_name["plan"]["categories"] == ["basic", "premium"]
    assert by_name["plan"]["nullable"] is True
    assert by_name["hours"]["min"] == pytest.approx(frame["hours"].min())
    assert by_name["constant"]["constant"] is True
    assert contract["threshold"] == 0.5 and contract["as_of"] == "2024-01-31"


@pytest.mark.parametrize("model", ["hist_gb", "logistic_regression"])
def test_out_of_fold_probabilities_rank_alike_with_and_without_calibration(model):
    """Uncalibrated out-of-fold scores are predict_proba (decision values clipped to [0, 1]
    once lost their ranking); calibrated ones go through the fitted sigmoid map."""
    from churn.model import out_of_fold

    frame = quirky_frame(600, seed=2)
    x, y = frame.drop(columns="churn_label"), frame["churn_label"]
    aucs = {}
    for calibration in ("none", "sigmoid"):
        p = TrainParams(model=model, calibration=calibration, class_weight="balanced")
        fitted = fit_pipeline(build_pipeline(SPEC, p, 0), x, y)
        base = build_pipeline(SPEC, p, 0, calibrate=False)
        probability, per_fold = out_of_fold(fitted, base, x, y, p, 0)
        assert len(per_fold) == p.cv_folds and ((probability >= 0) & (probability <= 1)).all()
        aucs[calibration] = np.mean(per_fold)
    assert aucs["none"] > 0.8 and abs(aucs["none"] - aucs["sigmoid"]) < 0.02, aucs


@pytest.mark.parametrize("model", ["hist_gb", "logistic_regression"])
def test_scoring_a_block_of_rows_at_a_time_gives_every_row_the_same_score(model, monkeypatch):
    import churn.model

    frame = quirky_frame(n=1000)
    names = ["hours", "constant", "tv", "plan"]
    pipeline = fit_pipeline(build_pipeline(SPEC, TrainParams(model=model), 0), frame[names],
                            frame["churn_label"])  # fmt: skip
    whole = pipeline.predict_proba(frame[names])[:, 1]
    monkeypatch.setattr(churn.model, "SCORE_BLOCK_ROWS", 64)  # 16 blocks, the last short
    blocked = churn.model.churn_scores(pipeline, frame, names)
    assert blocked.shape == whole.shape and np.array_equal(blocked, whole)
