"""Every gate passing and failing, on fake models (unit level: no MLflow, no files)."""

import numpy as np
import pandas as pd
import pytest

from churn.params import PromoteParams
from churn.promote import Candidate, contract_differences, evaluate_gates

CONTRACT = {
    "label": "churn_label",
    "as_of": "2024-01-31",
    "model": "fake",
    "features": [{"name": "x", "kind": "numeric"}, {"name": "plan", "kind": "category"}],
}


class Fake:
    """predict_proba = a fixed function of x."""

    def __init__(self, fn):
        self.fn = fn

    def predict_proba(self, frame):
        p = self.fn(frame["x"].to_numpy(dtype=float))
        return np.column_stack([1 - p, p])


def make_frame(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random(n)
    return pd.DataFrame({"x": x, "plan": "a", "churn_label": rng.random(n) < x})


GOOD = Fake(lambda x: x)
WEAK = Fake(lambda x: 0.5 + 0.1 * (x - 0.5) + 0.3 * np.sin(40 * x))


NO_LATER = make_frame().iloc[:0]  # oot.parquet when no later month has labels
LATER = {"roc_auc": 0.9, "pr_auc": 0.8, "oot": {"as_of": "2024-02-29"}}  # metrics.json


def run(model=GOOD, champion=None, champion_model=None, metrics=None, rolled_back=(),
        later=NO_LATER, **p):  # fmt: skip
    candidate = Candidate(model, "sha-new", CONTRACT, metrics or {"roc_auc": 0.9, "pr_auc": 0.8})
    gates, latency = evaluate_gates(candidate, champion, champion_model, make_frame(), later,
                                    {"drift_share": 0.1, "retrain_recommended": False,
                                     "threshold": 0.3}, set(rolled_back),
                                    PromoteParams(**p), 0.5)  # fmt: skip
    return {g["gate"]: g for g in gates}, latency


def champion_entry(features=None):
    return {"version": "1", "sha256": "sha-old", "as_of": "2024-01-31",
            "metrics": {"roc_auc": 0.7}, "features": features or CONTRACT["features"]}  # fmt: skip


def test_everything_passes_for_a_good_first_model():
    gates, latency = run()
    assert all(g["verdict"] in ("pass", "info") for g in gates.values())
    assert gates["non_regression"]["detail"] == "no champion yet"
    assert gates["drift_context"]["verdict"] == "info"
    assert latency > 0 and gates["sanity_latency"]["value"] is None  # measured value not reported


@pytest.mark.parametrize(
    ("metrics", "failing"),
    [({"roc_auc": 0.6, "pr_auc": 0.8}, "quality_floor_roc_auc"),
     ({"roc_auc": 0.9, "pr_auc": 0.1}, "quality_floor_pr_auc")],
)  # fmt: skip
def test_quality_floors(metrics, failing):
    gates, _ = run(metrics=metrics)
    assert gates[failing]["verdict"] == "fail"


def test_non_regression_scores_both_models_on_the_same_test_set():
    better, _ = run(GOOD, champion_entry(), WEAK)
    assert better["non_regression"]["verdict"] == "pass" and better["non_regression"]["value"] > 0
    worse, _ = run(WEAK, champion_entry(), GOOD)
    assert worse["non_regression"]["verdict"] == "fail" and worse["non_regression"]["value"] < 0
    margin, _ = run(GOOD, champion_entry(), GOOD, margin=0.01)
    assert margin["non_regression"]["value"] == 0 and margin["non_regression"]["verdict"] == "fail"


def test_non_regression_falls_back_to_the_recorded_metric_without_the_artifact():
    gates, _ = run(GOOD, champion_entry(), None)
    assert "recorded metric" in gates["non_regression"]["detail"]
    assert gates["non_regression"]["verdict"] == "pass"


def test_feature_contract_change_fails_unless_allowed():
    other = [{"name": "x", "kind": "numeric"}, {"name": "plan", "kind": "numeric"}]
    gates, _ = run(GOOD, champion_entry(other), GOOD)
    assert gates["feature_contract"]["verdict"] == "fail"
    assert gates["feature_contract"]["value"] == ["plan: numeric->category"]
    allowed, _ = run(GOOD, champion_entry(other), GOOD, allow_contract_change=True)
    assert allowed["feature_contract"]["verdict"] == "pass"


def test_contract_differences_lists_added_and_removed():
    a = {"features": [{"name": "x", "kind": "numeric"}, {"name": "new", "kind": "bool"}]}
    b = {"features": [{"name": "x", "kind": "numeric"}, {"name": "old", "kind": "bool"}]}
    assert contract_differences(a, b) == ["+new", "-old"]


def test_sanity_gates():
    nan, _ = run(Fake(lambda x: np.where(x > 0.9, np.nan, x)))
    assert nan["sanity_scores"]["verdict"] == "fail" and nan["sanity_scores"]["value"] > 0
    everyone, _ = run(Fake(lambda x: 0.9 + 0 * x))
    assert everyone["sanity_positive_rate"]["verdict"] == "fail"
    # a timing cannot decide: over the budget the gate is informational, and no gate fails
    slow, _ = run(latency_budget_ms=1e-9)
    assert slow["sanity_latency"]["verdict"] == "info" and slow["sanity_latency"]["value"] is None
    assert not [g for g in slow.values() if g["verdict"] == "fail"]


def test_a_model_rolled_back_from_is_not_promoted_again():
    gates, _ = run(rolled_back={"sha-new"})
    assert gates["not_rolled_back"]["verdict"] == "fail"


def test_calibration_gate_fails_inflated_probabilities():
    """Scores 0.35 above the truth (what class weighting did) fail the ECE ceiling; the
    calibrated ones pass. The ceiling is never below promote.max_ece."""
    gates, _ = run()
    assert gates["calibration_ece"]["verdict"] == "pass"
    assert gates["calibration_ece"]["threshold"] >= 0.05
    inflated = Fake(lambda x: np.clip(x + 0.35, 0, 1))
    gates, _ = run(model=inflated)
    assert gates["calibration_ece"]["verdict"] == "fail", gates["calibration_ece"]
    assert gates["calibration_ece"]["value"] > 0.2


def test_without_a_later_labelled_month_out_of_time_is_informational():
    gates, _ = run()
    assert gates["out_of_time_roc_auc"]["verdict"] == "info"
    assert "nothing to check" in gates["out_of_time_roc_auc"]["detail"]
    assert "out_of_time_vs_champion" not in gates


def test_a_first_champion_below_the_out_of_time_floor_is_refused():
    """The course month_000 case: good on its own month's test split (metrics pass), a coin
    toss on the next month (AUC 0.49 measured there)."""
    later = make_frame(seed=1).assign(x=lambda f: 1 - f["x"])  # next month: ranking reversed
    gates, _ = run(GOOD, later=later, metrics=LATER)
    floor = gates["out_of_time_roc_auc"]
    assert floor["verdict"] == "fail" and floor["value"] < 0.5 and floor["threshold"] == 0.6
    assert "next month 2024-02-29, 400 users" in floor["detail"]
    assert gates["quality_floor_roc_auc"]["verdict"] == "pass"
    waived, _ = run(GOOD, later=later, metrics=LATER, min_oot_roc_auc=None)
    assert waived["out_of_time_roc_auc"]["verdict"] == "info"
    assert "no floor: promote.min_oot_roc_auc is null" in waived["out_of_time_roc_auc"]["detail"]
    good, _ = run(GOOD, later=make_frame(seed=1), metrics=LATER)
    assert good["out_of_time_roc_auc"]["verdict"] == "pass"


def test_out_of_time_against_the_champion_on_the_same_month():
    later = make_frame(seed=2)
    better, _ = run(GOOD, champion_entry(), WEAK, later=later, metrics=LATER)
    assert better["out_of_time_vs_champion"]["verdict"] == "pass"
    assert better["out_of_time_vs_champion"]["value"] > 0
    worse, _ = run(WEAK, champion_entry(), GOOD, later=later, metrics=LATER, min_oot_roc_auc=0.0)
    assert worse["out_of_time_vs_champion"]["verdict"] == "fail"
    assert worse["out_of_time_vs_champion"]["value"] < -0.02
    assert worse["out_of_time_vs_champion"]["threshold"] == -0.02
    same, _ = run(GOOD, champion_entry(), GOOD, later=later, metrics=LATER)
    assert same["out_of_time_vs_champion"]["value"] == 0
    assert same["out_of_time_vs_champion"]["verdict"] == "pass"
