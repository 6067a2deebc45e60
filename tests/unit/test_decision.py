"""Money decisions, calibration error, lift and the scored call list, on tiny arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churn.decision import GRID, customer_values, expected_gain, realised_value, value_curve
from churn.evaluate import ece_noise_floor, expected_calibration_error, lift_table
from churn.params import DecisionParams
from churn.score import score_users

P = DecisionParams(offer_cost=10, save_rate=0.5, value_months=10, fee_column="fee")


def test_customer_values_use_the_fee_column_or_the_flat_value():
    frame = pd.DataFrame({"fee": [10.0, None, 30.0]})
    assert customer_values(frame, P).tolist() == [100.0, 200.0, 300.0]  # missing: the median
    flat = customer_values(pd.DataFrame({"other": [1, 2]}), P)
    assert flat.tolist() == [P.customer_value] * 2


def test_value_curve_matches_a_brute_force_sum_at_every_threshold():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    probability = np.round(rng.random(300), 3)
    values = rng.uniform(50, 500, 300)
    curve = value_curve(y, probability, values, P)
    for t, net, share in zip(curve.thresholds, curve.net_value, curve.contacted, strict=True):
        contacted = probability >= t
        assert net == pytest.approx(realised_value(y, contacted, values, P), abs=1e-6)
        assert share == pytest.approx(contacted.mean())
    assert curve.best == float(curve.thresholds[np.argmax(curve.net_value)])


def test_the_best_threshold_is_the_break_even_probability_for_calibrated_scores():
    """With probabilities that are exact, offering pays exactly when p * save * value >
    cost: value 100, save 0.5, cost 10 -> break-even p = 0.2."""
    rng = np.random.default_rng(0)
    probability = rng.random(200_000)
    y = (rng.random(200_000) < probability).astype(int)
    curve = value_curve(y, probability, np.full(len(y), 100.0), P)
    assert curve.best == pytest.approx(0.2, abs=0.02)
    assert set(np.round(curve.thresholds, 2)) <= set(GRID)


def test_expected_gain_is_probability_times_saved_value_minus_cost():
    gain = expected_gain(np.array([0.0, 0.2, 1.0]), np.array([100.0, 100.0, 100.0]), P)
    assert gain.tolist() == pytest.approx([-10.0, 0.0, 40.0])


def test_ece_is_zero_for_exact_frequencies_and_large_for_inflated_scores():
    scores = np.repeat([0.1, 0.5, 0.9], 10)
    y = np.concatenate([[1] + [0] * 9, [1] * 5 + [0] * 5, [1] * 9 + [0]])
    assert expected_calibration_error(y, scores, bins=3) == pytest.approx(0.0)
    assert expected_calibration_error(y, np.clip(scores + 0.2, 0, 1), bins=3) > 0.15


def test_ece_noise_floor_shrinks_with_rows():
    rng = np.random.default_rng(1)
    small, large = rng.random(160), rng.random(16_000)
    assert ece_noise_floor(small) > 5 * ece_noise_floor(large)
    assert 0.05 < ece_noise_floor(small) < 0.12


def test_lift_table_finds_every_churner_by_the_last_decile():
    y = np.array([1] * 10 + [0] * 90)
    scores = np.linspace(1, 0, 100)  # churners ranked first
    rows = lift_table(y, scores)
    assert rows[0]["lift"] == 10.0 and rows[0]["churners_found_share"] == 1.0
    assert [r["decile"] for r in rows] == list(range(1, 11))
    assert rows[-1]["contacted_share"] == 1.0


class Fixed:
    """A stand-in model: the probability is the `p` column."""

    def predict_proba(self, frame):
        p = frame["p"].to_numpy()
        return np.column_stack([1 - p, p])


def test_score_users_ranks_decides_and_values_every_user():
    online = pd.DataFrame({"uid": ["a", "b", "c", "d"], "p": [0.1, 0.9, 0.5, 0.9],
                           "fee": [1.0, 1.0, 2.0, 3.0]})  # fmt: skip
    contract = {"threshold": 0.5, "features": [{"name": "p"}, {"name": "fee"}]}
    labels = pd.Series([0, 1, 0, 1], index=["a", "b", "c", "d"])
    scored = score_users(Fixed(), contract, online, "uid", P, labels)
    table = scored.table
    assert table["uid"].tolist() == ["b", "d", "c", "a"]  # ties keep id order
    assert table["rank"].tolist() == [1, 2, 3, 4]
    assert table["churn"].tolist() == [True, True, True, False]
    assert table["expected_value"].tolist() == pytest.approx([-5.5, 3.5, -5.0, -9.5])
    assert scored.report["contacted"] == 3
    assert scored.report["expected_churners"] == pytest.approx(2.4)
    assert scored.report["expected_value_of_campaign"] == pytest.approx(-7.0)
    assert scored.report["labels"] == {"users": 4, "churners": 2}
    assert scored.gains[-1]["expected_found_share"] == pytest.approx(1.0)
    # a stand-in has no reasons: scored all the same, and the report says why
    assert "reason_1" not in table and "not one churn.fastpath reads" in scored.report[
        "reasons_unavailable"]  # fmt: skip


def test_score_users_names_features_the_snapshot_lacks():
    contract = {"threshold": 0.5, "features": [{"name": "p"}, {"name": "tenure"}]}
    with pytest.raises(Exception, match="tenure"):
        score_users(Fixed(), contract, pd.DataFrame({"uid": ["a"], "p": [0.2]}), "uid", P)


def test_score_leaves_out_users_whose_outcome_the_model_trained_on():
    from churn.params import parse_params
    from churn.score import known_outcomes

    labels = 3  # users of the newest month whose outcome is known
    one = {"as_of": "2024-01-31", "online_as_of": "2024-01-31"}
    left_out = known_outcomes(one, labels, parse_params({}))
    assert left_out["users"] == 3 and "trained and tested on" in left_out["reason"]
    told = parse_params({"score": {"known_outcomes": True}})
    assert known_outcomes(one, labels, told) is None
    later = {"as_of": "2024-01-31", "online_as_of": "2024-02-29"}
    assert known_outcomes(later, labels, parse_params({})) is None
    assert known_outcomes(one, 0, parse_params({})) is None
