import numpy as np
import pandas as pd

from churn import synthetic
from churn.params import SyntheticParams
from churn.schema import COURSE_TABLE_NAMES


def months(**kw):
    return list(synthetic.generate(SyntheticParams(**{"n_users": 2000, "n_months": 4, **kw})))


def test_month_ends():
    assert synthetic.month_ends("2024-01-31", 3) == ["2024-01-31", "2024-02-29", "2024-03-31"]


def test_same_params_give_identical_frames_and_other_seeds_differ():
    a, b = months(), months()
    for (date_a, ta), (date_b, tb) in zip(a, b, strict=True):
        assert date_a == date_b
        for name in COURSE_TABLE_NAMES:
            pd.testing.assert_frame_equal(ta[name], tb[name])
    c = months(seed=7)
    assert not a[0][1]["labels"].equals(c[0][1]["labels"])


def test_course_quirks_are_reproduced():
    _, tables = months()[0]
    subs = tables["subscriptions"]
    no_net = subs["net_service"] == "No"
    assert subs.loc[no_net, "plan_stream_tv"].isna().all()
    assert subs.loc[~no_net, "plan_stream_tv"].notna().all()
    assert tables["usage_agg_30d"]["avg_session_mins_7d"].nunique() == 1
    assert set(tables["users"]["user_gender"]) == {"Female", "Male"}
    rate = tables["labels"]["churn_label"].mean()
    assert 0.2 < rate < 0.33


def test_covariate_drift_starts_at_the_configured_month():
    data = months(drift_from_month=2)
    rebuffer = [t["usage_agg_30d"]["rebuffer_events_7d"].mean() for _, t in data]
    watch = [t["usage_agg_30d"]["watch_hours_30d"].mean() for _, t in data]
    fee = [t["subscriptions"]["monthly_fee"].mean() for _, t in data]
    assert rebuffer[2] > rebuffer[1] + 0.3 and abs(rebuffer[1] - rebuffer[0]) < 0.15
    assert watch[2] < watch[1] * 0.9
    assert fee[2] > fee[1] * 1.05


def test_concept_drift_changes_what_predicts_churn():
    data = months(drift_from_month=2, n_users=6000)

    def churn_gap(tables, column, value):
        joined = tables["subscriptions"].merge(tables["labels"], on="user_id")
        is_value = joined[column] == value
        return (
            joined.loc[is_value, "churn_label"].mean() - joined.loc[~is_value, "churn_label"].mean()
        )

    before = churn_gap(data[1][1], "contract_type", "Month-to-month")
    after = churn_gap(data[2][1], "contract_type", "Month-to-month")
    assert before > after + 0.1


def test_tenure_grows_one_month_per_snapshot():
    data = months()
    first = data[0][1]["subscriptions"]["months_active"].to_numpy()
    third = data[2][1]["subscriptions"]["months_active"].to_numpy()
    assert np.array_equal(third, first + 2)
