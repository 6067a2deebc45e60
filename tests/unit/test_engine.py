"""churn.engine's pure parts, without a cluster: the id ranges and the typed shape."""

from __future__ import annotations

from churn.engine import _id_ranges, _meta
from churn.schema import COURSE_TABLES, LABEL_TABLE


def stats(*partitions: list[str]) -> dict[str, list[dict]]:
    return {LABEL_TABLE: [{"rows": len(ids), "sample": sorted(ids)} for ids in partitions]}


def test_id_ranges_cut_about_partition_rows_users_and_cover_every_id():
    ids = [f"SF-{i:07d}" for i in range(1, 1001)]
    ranges = _id_ranges(stats(ids[500:], ids[:500]), partition_rows=250)
    assert len(ranges) - 1 == 4
    assert ranges[0] == ids[0] and ranges[-1] == ids[-1]
    assert list(ranges) == sorted(set(ranges))
    assert _id_ranges(stats(ids[:500], ids[500:]), 250) == ranges  # not the parts' order


def test_one_user_is_one_range():
    assert _id_ranges(stats(["SF-0000001"]), partition_rows=1000) == ("SF-0000001",) * 2


def test_the_typed_shape_follows_missing_cells_over_the_whole_table():
    subscriptions = next(t for t in COURSE_TABLES if t.name == "subscriptions")
    none = {c.name: False for c in subscriptions.columns}
    some = {**none, "months_active": True, "plan_stream_tv": True}
    assert str(_meta(subscriptions, none).dtypes["months_active"]) == "int64"
    assert str(_meta(subscriptions, some).dtypes["months_active"]) == "float64"
    assert str(_meta(subscriptions, none).dtypes["plan_stream_tv"]) == "bool"
    assert str(_meta(subscriptions, some).dtypes["plan_stream_tv"]) == "boolean"
