"""churn.engine's pure parts, without a cluster: the id ranges, the typed shape, the pieces
of a prepared file and the contract's observed values merged from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from churn import engine
from churn.engine import _id_order_bounds, _id_ranges, _meta, gather_rows, pieces
from churn.model import merge_observed, observed_features
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


def ordered(*partitions: list[str]) -> list[dict]:
    return [{"ordered": ids == sorted(set(ids)), "sample": ids} for ids in partitions]


def test_parts_in_id_order_give_their_bounds_else_a_shuffle_is_needed():
    ids = [f"SF-{i:07d}" for i in range(1, 10)]
    assert _id_order_bounds(ordered(ids[:3], ids[3:7], ids[7:])) == [ids[0], ids[3], ids[7], ids[8]]
    assert _id_order_bounds(ordered(ids[3:7], ids[:3], ids[7:])) is None  # parts out of order
    assert _id_order_bounds(ordered(ids[:4], ids[3:7])) is None  # an id in two parts
    assert _id_order_bounds(ordered(ids[:3], [ids[4], ids[3]])) is None  # a part out of order
    assert _id_order_bounds(ordered(ids[:1])) == [ids[0], ids[0]]  # one user


def test_the_typed_shape_follows_missing_cells_over_the_whole_table():
    subscriptions = next(t for t in COURSE_TABLES if t.name == "subscriptions")
    none = {c.name: False for c in subscriptions.columns}
    some = {**none, "months_active": True, "plan_stream_tv": True}
    assert str(_meta(subscriptions, none).dtypes["months_active"]) == "int64"
    assert str(_meta(subscriptions, some).dtypes["months_active"]) == "float64"
    assert str(_meta(subscriptions, none).dtypes["plan_stream_tv"]) == "bool"
    assert str(_meta(subscriptions, some).dtypes["plan_stream_tv"]) == "boolean"


def two_groups(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """A parquet file of 10 rows in row groups of 6 and 4."""
    frame = pd.DataFrame({"x": np.arange(10.0), "plan": list("aabbccddee")})
    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=6)
    return path, frame


def test_pieces_cut_row_groups_at_partition_rows_in_file_order(tmp_path):
    path, _ = two_groups(tmp_path)
    assert pieces(path, 4) == [(0, 0, 4), (0, 4, 6), (1, 0, 4)]
    assert pieces(path, 100) == [(0, 0, 6), (1, 0, 4)]


def test_a_piece_is_its_rows_whatever_batches_decode_them(tmp_path, monkeypatch):
    path, frame = two_groups(tmp_path)
    for batch in (1, 3, 100):
        monkeypatch.setattr(engine, "PIECE_BATCH", batch)
        got = pd.concat([engine._piece(str(path), piece) for piece in pieces(path, 4)],
                        ignore_index=True)  # fmt: skip
        pd.testing.assert_frame_equal(got, frame)
        pd.testing.assert_frame_equal(engine._piece(str(path), (0, 4, 6), ["plan"]),
                                      frame[["plan"]].iloc[4:6].reset_index(drop=True))  # fmt: skip


def test_gathered_rows_are_the_rows_taken_in_the_order_asked(tmp_path):
    path, frame = two_groups(tmp_path)
    rows = np.array([9, 0, 7, 3])
    pd.testing.assert_frame_equal(gather_rows(None, path, rows), frame.take(rows))
    assert gather_rows(None, path, np.array([], dtype=int), ["x"]).empty


SPEC = {"features": [{"name": "x", "kind": "numeric"}, {"name": "plan", "kind": "category"}]}


def test_observed_values_of_parts_merge_into_the_whole_tables():
    frame = pd.DataFrame({"x": [np.nan, -1.0, 5.0, 2.0, np.nan, np.nan],
                          "plan": ["b", None, "a", "c", None, None]})  # fmt: skip
    parts = [frame.iloc[:2], frame.iloc[2:4], frame.iloc[4:], frame.iloc[:0]]
    merged = merge_observed([observed_features(SPEC, p) for p in parts])
    assert merged == observed_features(SPEC, frame)
    assert merged[0]["min"] == -1.0 and merged[0]["non_negative"] is False
    assert merged[1]["categories"] == ["a", "b", "c"] and merged[1]["nullable"] is True
