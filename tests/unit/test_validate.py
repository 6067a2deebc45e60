import numpy as np
import pandas as pd
import pytest

from churn.errors import DataValidationError
from churn.schema import ID, Column, Table, course_table
from churn.validate import (
    all_distinct,
    check_same_ids,
    coerce_column,
    parse_bool,
    parse_number,
    validate_table,
)


def test_parse_number_turns_blanks_into_missing_and_flags_text():
    values, bad = parse_number(pd.Series(["1.5", " ", "", None, "abc", " 7 "]))
    assert values.iloc[0] == 1.5 and values.iloc[5] == 7.0
    assert values.iloc[1:4].isna().all()
    assert bad.tolist() == [False, False, False, False, True, False]


def test_parse_number_flags_infinity():
    _, bad = parse_number(pd.Series([1.0, np.inf]))
    assert bad.tolist() == [False, True]


def test_parse_bool_accepts_common_spellings():
    values, bad = parse_bool(pd.Series(["True", "no", "1", "0", "YES", None, "maybe"]))
    assert values.iloc[:5].tolist() == [True, False, True, False, True]
    assert pd.isna(values.iloc[5])
    assert bad.tolist() == [False] * 6 + [True]


def frame(**columns):
    n = len(next(iter(columns.values())))
    return pd.DataFrame({ID: [f"u{i}" for i in range(n)], **columns})


def test_count_column_becomes_int_and_rejects_fractions():
    col = Column("skips_7d", "count")
    out = coerce_column(frame(skips_7d=["1", "2", "3"]), "f.csv", col, 0.0)
    assert out.dtype == "int64" and out.tolist() == [1, 2, 3]
    with pytest.raises(DataValidationError) as err:
        coerce_column(frame(skips_7d=["1", "2.5", "3"]), "f.csv", col, 0.0)
    assert err.value.rule == "dtype" and err.value.ids == ["u1"]


def test_error_message_names_file_column_rule_and_ids():
    with pytest.raises(DataValidationError) as err:
        coerce_column(
            frame(monthly_fee=["5", "-1"]), "subs.csv", Column("monthly_fee", "amount"), 0
        )
    message = str(err.value)
    assert "subs.csv" in message and "monthly_fee" in message and "non_negative" in message
    assert "u1" in message


def test_table_keeps_schema_order_and_drops_extra_columns():
    table = course_table("payments_agg_90d")
    raw = pd.DataFrame({"extra": [1, 2], "failed_payments_90d": ["0", "2"], ID: ["a", "b"]})
    out = validate_table(raw, table, "p.csv", 0.0)
    assert list(out.columns) == [ID, "failed_payments_90d"]


def test_same_ids_across_tables():
    a = pd.DataFrame({ID: ["x", "y"]})
    b = pd.DataFrame({ID: ["x", "z"]})
    check_same_ids({"a": a, "b": a.copy()}, {"a": "a.csv", "b": "b.csv"})
    with pytest.raises(DataValidationError) as err:
        check_same_ids({"a": a, "b": b}, {"a": "a.csv", "b": "b.csv"})
    assert err.value.rule == "same_ids" and err.value.file == "b.csv"


def test_nullable_category_within_limit_is_kept():
    table = Table("t", (Column(ID, "id"), Column("plan", "category", max_null_rate=0.5)))
    out = validate_table(frame(plan=["a", None, "b", "c"]), table, "t.csv", 0.0)
    assert out["plan"].isna().sum() == 1


@pytest.mark.parametrize(
    "ids, distinct",
    [
        (["a", "b", "c"], True),  # sorted: proved by one pass of comparisons
        (["c", "a", "b"], True),  # unsorted: hashed
        (["a", "b", "b"], False),  # sorted with a repeat is not strictly increasing
        (["b", "a", "b"], False),
        (["a", None, "b", None], True),  # missing values are the null rule's business
        ([3, "a", 3], False),  # values that do not compare are still hashed
    ],
)
def test_all_distinct(ids, distinct):
    assert all_distinct(pd.Series(ids, dtype=object)) is distinct


@pytest.mark.parametrize("ids", [["a", "b", "b", "c"], ["b", "c", "a", "b"]])
def test_a_repeated_id_is_refused_sorted_or_not(ids):
    frame = pd.DataFrame({ID: ids})
    with pytest.raises(DataValidationError, match="unique_id") as err:
        coerce_column(frame, "users.csv", Column(ID, "id", max_null_rate=0.0), 0.05)
    assert "2 rows share an id (e.g. user_id b, b)" in str(err.value)


def test_dates_are_rewritten_as_iso_text():
    frame = pd.DataFrame({ID: ["a", "b", "c"], "signup_date": ["2024-01-05", "2024-1-5", None]})
    values = coerce_column(frame, "users.csv", Column("signup_date", "date"), 0.5)
    assert values.tolist()[:2] == ["2024-01-05", "2024-01-05"] and pd.isna(values[2])
    assert values.dtype == object and isinstance(values[0], str)
