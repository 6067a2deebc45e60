import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from churn.errors import ChurnError
from churn.io import write_parquet, write_table
from churn.prepare import (
    build_features,
    feature_spec,
    feature_table,
    join_snapshot,
    join_tables,
    split,
)


def tiny_tables():
    users = pd.DataFrame(
        {"user_id": ["b", "a", "c", "d"], "signup_date": ["2024-01-01"] * 4, "tier": list("xyxy")}
    )
    usage = pd.DataFrame({"user_id": ["a", "b", "c", "d"], "hours": [1.0, 2.0, 3.0, 4.0]})
    flags = pd.DataFrame(
        {"user_id": ["a", "b", "c", "d"], "tv": pd.array([True, None, False, True], "boolean")}
    )
    labels = pd.DataFrame({"user_id": ["d", "c", "b", "a"], "churn_label": [1, 0, 1, 0]})
    return {"users": users, "usage": usage, "flags": flags, "labels": labels}


KINDS = {"signup_date": "date", "tier": "category", "hours": "numeric", "tv": "bool"}


def test_join_is_one_row_per_user_sorted_with_label_last():
    joined = join_snapshot(tiny_tables())
    assert joined["user_id"].tolist() == ["a", "b", "c", "d"]
    assert joined.columns[-1] == "churn_label"
    assert joined.set_index("user_id").loc["b", "hours"] == 2.0


def test_join_rejects_duplicate_users():
    tables = tiny_tables()
    tables["usage"] = pd.concat([tables["usage"], tables["usage"].head(1)])
    with pytest.raises(ChurnError, match="'usage' does not hold the same users"):
        join_snapshot(tables)
    tables = tiny_tables()
    tables["users"] = pd.concat([tables["users"], tables["users"].head(1)])
    with pytest.raises(ChurnError, match="'users': user_id is not unique"):
        join_snapshot(tables)


def test_join_refuses_tables_of_other_users_instead_of_pairing_rows_by_position():
    tables = tiny_tables()
    tables["usage"] = tables["usage"].assign(user_id=["a", "b", "c", "e"])
    with pytest.raises(ChurnError, match="'usage' does not hold the same users"):
        join_snapshot(tables)


def test_arrow_tables_are_written_byte_for_byte_as_pandas_writes_them(tmp_path):
    """The stage builds Arrow tables; DVC hashes must not change with the library."""
    features = build_features(join_snapshot(tiny_tables()), KINDS)
    write_parquet(features, tmp_path / "pandas.parquet")
    arrow = {name: pa.Table.from_pandas(frame, preserve_index=False)
             for name, frame in tiny_tables().items()}  # fmt: skip
    write_table(feature_table(join_tables(arrow), KINDS), tmp_path / "arrow.parquet")
    assert (tmp_path / "arrow.parquet").read_bytes() == (tmp_path / "pandas.parquet").read_bytes()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "arrow.parquet"), features)


def test_build_features_drops_dates_and_turns_bools_into_floats():
    joined = join_snapshot(tiny_tables())
    features = build_features(joined, KINDS)
    assert "signup_date" not in features
    assert features["tv"].dtype == "float64"
    assert np.isnan(features.loc[1, "tv"]) and features.loc[0, "tv"] == 1.0
    assert features["churn_label"].dtype == bool
    assert [f["name"] for f in feature_spec(KINDS)] == ["tier", "hours", "tv"]


def test_split_is_stratified_and_reproducible():
    frame = pd.DataFrame(
        {"user_id": range(100), "x": range(100), "churn_label": [1] * 20 + [0] * 80}
    )
    _train_a, test_a = split(frame, 0.25, 3)
    _train_b, test_b = split(frame, 0.25, 3)
    pd.testing.assert_frame_equal(test_a, test_b)
    assert test_a["churn_label"].sum() == 5 and len(test_a) == 25
    _, test_c = split(frame, 0.25, 4)
    assert set(test_c["user_id"]) != set(test_a["user_id"])


def test_split_needs_both_classes():
    frame = pd.DataFrame({"user_id": range(10), "churn_label": [0] * 10})
    with pytest.raises(ChurnError, match="both classes"):
        split(frame, 0.2, 0)
