"""The control group, the measured save rate and its interval, the campaign ledger and
`decision.save_rate: measured`, and the synthetic offer effect — on arrays and temp files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from churn import campaign
from churn.decision import control_draw
from churn.errors import ChurnError
from churn.params import DecisionParams, SyntheticParams
from churn.score import call_list, calls, score_users
from churn.synthetic import generate, offer_outcome
from tests.unit.test_decision import Fixed

P = DecisionParams(offer_cost=10, save_rate=0.5, value_months=10, fee_column="fee")
IDS = np.array([f"SF-{i:07d}" for i in range(1, 100_001)], dtype=object)


def test_the_control_draw_is_a_seeded_share_per_user_and_month():
    draw = control_draw(IDS, "2024-01-31", 42, 0.1)
    assert abs(draw.mean() - 0.1) < 3 * np.sqrt(0.1 * 0.9 / len(IDS))
    # a user's draw depends on the id, not on the row order or on the other users
    order = np.random.default_rng(0).permutation(len(IDS))
    assert (control_draw(IDS[order], "2024-01-31", 42, 0.1) == draw[order]).all()
    assert (control_draw(IDS[:500], "2024-01-31", 42, 0.1) == draw[:500]).all()
    # a new draw each month and each seed (overlap ~ share^2, not share)
    for other in (control_draw(IDS, "2024-02-29", 42, 0.1),
                  control_draw(IDS, "2024-01-31", 43, 0.1)):  # fmt: skip
        assert abs((draw & other).mean() - 0.01) < 0.003
    # a larger share keeps everyone the smaller one held out
    assert (control_draw(IDS, "2024-01-31", 42, 0.2) >= draw).all()
    assert not control_draw(IDS, "2024-01-31", 42, 0.0).any()


def test_score_users_holds_the_control_group_out_of_the_call_list():
    online = pd.DataFrame({"uid": list("abcdef"), "p": [0.9, 0.8, 0.7, 0.6, 0.2, 0.1],
                           "fee": [1.0] * 6})  # fmt: skip
    contract = {"threshold": 0.5, "features": [{"name": "p"}, {"name": "fee"}]}
    draw = np.array([False, True, False, True, False, True])  # f is drawn but below 0.5
    scored = score_users(Fixed(), contract, online, "uid", P, control_draw=draw)
    table = scored.table
    assert table.loc[table["control"], "uid"].tolist() == ["b", "d"]
    assert scored.report["contacted"] == 2 and scored.report["control"] == 2
    assert scored.report["expected_churners_contacted"] == pytest.approx(0.9 + 0.7)
    assert calls(table, 10)["uid"].tolist() == ["a", "c", "e", "f"]
    assert "control" not in calls(table, 10).columns


@pytest.mark.parametrize("top", [1, 3, 4, 10])
def test_the_call_list_of_a_scored_file_reads_row_groups_until_it_has_top_users(tmp_path, top):
    """`churn score --top`: the scored file's row groups (2 rows each here) are read until
    `top` users are found; the control group is left out across groups."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pd.DataFrame({"uid": list("abcdef"), "control": [False, True, True, False, False, True],
                          "rank": range(1, 7)})  # fmt: skip
    path = tmp_path / "scored.parquet"
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), path, row_group_size=2)
    pd.testing.assert_frame_equal(call_list(path, top), calls(table, top).reset_index(drop=True))


def test_the_save_rate_and_its_money_from_known_counts():
    # 1 000 called, 300 churned; 100 control, 40 churned: churn 0.30 vs 0.40 -> 0.25 saved
    churned = np.r_[np.ones(300), np.zeros(700), np.ones(40), np.zeros(60)].astype(bool)
    contacted = np.r_[np.ones(1000), np.zeros(100)].astype(bool)
    m = campaign.measure(churned, contacted, ~contacted, np.full(1100, 200.0), P)
    assert m["save_rate"] == pytest.approx(0.25)
    assert m["save_rate_low"] < 0.25 < m["save_rate_high"]
    se = np.sqrt(1 / 300 - 1 / 1000 + 1 / 40 - 1 / 100)  # log risk ratio's standard error
    assert m["save_rate_high"] == pytest.approx(1 - 0.75 * np.exp(-1.959964 * se), abs=1e-6)
    assert m["saved_users"]["estimate"] == pytest.approx(100.0)  # (0.40 - 0.30) x 1 000
    assert m["net_value"]["estimate"] == pytest.approx(100 * 200.0 - 1000 * 10)
    assert m["net_value"]["low"] < m["net_value"]["estimate"] < m["net_value"]["high"]


def test_a_control_group_without_churners_is_not_measurable_and_says_why():
    churned = np.array([True, False, False, False])
    contacted = np.array([True, True, False, False])
    m = campaign.measure(churned, contacted, ~contacted, np.ones(4), P)
    assert m["save_rate"] is None and "no churners in the control group" in m["why_not"]


def test_the_95_interval_holds_the_true_effect_95_times_in_100():
    """400 simulated campaigns of 2 000 called and 200 control users, a churn rate of 0.4
    without the offer and a true save rate of 0.25: the interval's coverage."""
    rng = np.random.default_rng(7)
    held = 0
    for _ in range(400):
        y1 = rng.random(2000) < 0.4 * 0.75
        y0 = rng.random(200) < 0.4
        m = campaign.measure(np.r_[y1, y0], np.r_[np.ones(2000, bool), np.zeros(200, bool)],
                             np.r_[np.zeros(2000, bool), np.ones(200, bool)],
                             np.ones(2200), P)  # fmt: skip
        held += m["save_rate_low"] <= 0.25 <= m["save_rate_high"]
    assert 0.92 <= held / 400 <= 0.98, held


def test_pooled_months_add_up_their_counts():
    months = [{"as_of": "2024-02-29", "contacted": 1000, "contacted_churned": 300,
               "control": 100, "control_churned": 40, "save_rate": 0.25},
              {"as_of": "2024-03-31", "contacted": 1000, "contacted_churned": 300,
               "control": 100, "control_churned": 40, "save_rate": 0.25},
              {"as_of": "2024-04-30", "contacted": 10, "contacted_churned": 0,
               "control": 1, "control_churned": 0, "save_rate": None}]  # fmt: skip
    pool = campaign.pooled(months)
    churned = np.r_[np.ones(300), np.zeros(700), np.ones(40), np.zeros(60)].astype(bool)
    called = np.r_[np.ones(1000), np.zeros(100)].astype(bool)
    one = campaign.measure(churned, called, ~called, np.ones(1100), P)
    assert pool["months"] == ["2024-02-29", "2024-03-31"] and pool["contacted"] == 2000
    assert pool["save_rate"] == pytest.approx(0.25)
    assert pool["save_rate_high"] - pool["save_rate_low"] < one["save_rate_high"] - one[
        "save_rate_low"]  # fmt: skip
    assert campaign.pooled(months[2:]) is None


def entry(as_of: str, rate: float, low: float, high: float) -> dict:
    return {"as_of": as_of, "contacted": 1000, "contacted_churned": 300, "control": 100,
            "control_churned": 40, "save_rate": rate, "save_rate_low": low,
            "save_rate_high": high}  # fmt: skip


def test_the_ledger_keeps_one_measurement_per_month_oldest_first(tmp_path):
    campaign.record("streamflow-churn", entry("2024-03-31", 0.3, 0.2, 0.4), tmp_path)
    campaign.record("streamflow-churn", entry("2024-02-29", 0.1, 0.0, 0.2), tmp_path)
    rows = campaign.record("streamflow-churn", entry("2024-03-31", 0.31, 0.21, 0.41), tmp_path)
    assert [(r["as_of"], r["save_rate"]) for r in rows] == [("2024-02-29", 0.1),
                                                            ("2024-03-31", 0.31)]  # fmt: skip
    assert campaign.read_ledger("streamflow-churn", tmp_path) == rows
    assert campaign.read_ledger("another-lineage", tmp_path) == []
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temp file and a rename


@pytest.mark.parametrize(
    "payload, says",
    [
        ({"measurements": [{**entry("2024-02-29", 0.9, 0.1, 0.2)}]}, "outside its 95 % interval"),
        ({"measurements": [{**entry("2024-02-29", 0.2, 0.1, 0.3), "control": -1}]}, "control"),
        ({"measurements": [{**entry("2024-02-30", 0.2, 0.1, 0.3)}]}, "malformed date"),
        ([1, 2], "not a campaign ledger"),
    ],
)
def test_a_ledger_a_pull_request_broke_is_refused_naming_the_file(tmp_path, payload, says):
    (tmp_path / "streamflow-churn.json").write_text(json.dumps(payload))
    with pytest.raises(ChurnError, match=says) as caught:
        campaign.read_ledger("streamflow-churn", tmp_path)
    assert "streamflow-churn.json" in str(caught.value)


def test_a_lineage_name_cannot_leave_the_campaigns_folder(tmp_path):
    with pytest.raises(ChurnError, match=r"promote\.model_name"):
        campaign.ledger_path("../registry/streamflow-churn", tmp_path)


def test_save_rate_measured_uses_the_last_earlier_narrow_measurement(tmp_path):
    measured = DecisionParams(save_rate="measured", assumed_save_rate=0.2,
                              max_save_rate_interval=0.15)  # fmt: skip
    fixed = campaign.resolved_save_rate(P, "x", "2024-06-30", tmp_path)
    assert fixed == (0.5, "fixed: decision.save_rate 0.5")
    rate, basis = campaign.resolved_save_rate(measured, "x", "2024-06-30", tmp_path)
    assert rate == 0.2 and basis.startswith("assumed") and "no measured campaign" in basis
    campaign.record("x", entry("2024-02-29", 0.31, 0.25, 0.37), tmp_path)  # 0.12 wide
    campaign.record("x", entry("2024-04-30", 0.28, 0.18, 0.38), tmp_path)  # 0.20 wide
    campaign.record("x", entry("2024-06-30", 0.30, 0.27, 0.33), tmp_path)  # the month itself
    rate, basis = campaign.resolved_save_rate(measured, "x", "2024-06-30", tmp_path)
    assert rate == 0.2 and "2024-04-30" in basis and "0.200 wide" in basis
    rate, basis = campaign.resolved_save_rate(measured, "x", "2024-03-31", tmp_path)
    assert rate == 0.31 and basis.startswith("measured: 2024-02-29")
    # an offer that did harm: nobody is worth an offer, the rate is not negative
    campaign.record("x", entry("2024-07-31", -0.05, -0.1, 0.0), tmp_path)
    assert campaign.resolved_save_rate(measured, "x", "2024-08-31", tmp_path)[0] == 0.0


def test_the_synthetic_offer_keeps_each_called_churner_with_the_true_probability():
    p = SyntheticParams(n_users=20_000, n_months=2, offer_effect=0.3)
    ids = np.array([f"SF-{i:07d}" for i in range(1, 20_001)], dtype=object)
    churned = np.ones(20_000, bool)
    contacted = np.arange(20_000) % 2 == 0
    after = offer_outcome(p, "2024-02-29", ids, churned, contacted)
    assert after[~contacted].all()  # nobody uncalled is touched
    assert abs(1 - after[contacted].mean() - 0.3) < 3 * np.sqrt(0.3 * 0.7 / 10_000)
    # a user's outcome does not depend on the row order or on who else was called
    order = np.random.default_rng(1).permutation(20_000)
    assert (offer_outcome(p, "2024-02-29", ids[order], churned, contacted[order])
            == after[order]).all()  # fmt: skip
    alone = offer_outcome(p, "2024-02-29", ids[:1], churned[:1], np.array([True]))
    assert alone[0] == after[0]
    with pytest.raises(ValueError, match="not a generated month"):
        offer_outcome(p, "2025-01-31", ids, churned, contacted)


def test_the_offer_effect_does_not_change_the_generated_snapshots():
    def frames(effect: float) -> list[pd.DataFrame]:
        p = SyntheticParams(n_users=300, n_months=2, offer_effect=effect)
        return [t for _, tables in generate(p) for t in tables.values()]

    for a, b in zip(frames(0.0), frames(0.9), strict=True):
        pd.testing.assert_frame_equal(a, b)


def test_churn_campaign_says_what_is_missing_before_measuring(tmp_path):
    """No outcomes yet for the scored month, a scoring report of another month, a scored
    file from before control groups: each a one-line error naming the file, nothing
    written to the ledger."""
    from churn.params import Params

    raw, scored_dir, reports = tmp_path / "raw", tmp_path / "scored", tmp_path / "reports"
    for folder in (raw / "2024-06-30", scored_dir, reports):
        folder.mkdir(parents=True)
    (raw / "manifest.json").write_text(json.dumps({"source": "synthetic",
                                                   "snapshots": ["2024-06-30"]}))  # fmt: skip
    table = pd.DataFrame({"user_id": ["SF-0000001", "SF-0000002"], "churn": [True, True],
                          "control": [False, True]})  # fmt: skip
    table.to_parquet(scored_dir / "2024-06-30.parquet")
    scoring = {"as_of": "2024-06-30", "champion": {"version": "1"}, "threshold": 0.3}
    (reports / "scoring.json").write_text(json.dumps(scoring))

    def run() -> None:
        campaign.run(Params(), raw_dir=raw, scored_dir=scored_dir, reports_dir=reports,
                     root=tmp_path / "campaigns")  # fmt: skip

    with pytest.raises(ChurnError, match="no outcomes for 2024-06-30 yet") as caught:
        run()
    assert "labels.parquet" in str(caught.value)
    pd.DataFrame({"user_id": ["SF-0000001", "SF-0000002"], "churn_label": [True, False]}) \
        .to_parquet(raw / "2024-06-30" / "labels.parquet")  # fmt: skip
    (reports / "scoring.json").write_text(json.dumps({**scoring, "as_of": "2024-05-31"}))
    with pytest.raises(ChurnError, match=r"scoring\.json is for 2024-05-31, not 2024-06-30"):
        run()
    (reports / "scoring.json").write_text(json.dumps(scoring))
    table.drop(columns="control").to_parquet(scored_dir / "2024-06-30.parquet")
    with pytest.raises(ChurnError, match="no `control` column"):
        run()
    assert not (tmp_path / "campaigns").exists()
