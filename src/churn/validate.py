"""Validate raw tables against the data contract and coerce them to typed frames.

Every function here is pure: it takes a frame and returns a new typed frame, or
raises DataValidationError naming the file, the column, the rule and some ids.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from churn.errors import DataValidationError
from churn.schema import ID, Column, Table

TRUE_STRINGS = frozenset({"true", "1", "1.0", "yes", "y", "t"})
FALSE_STRINGS = frozenset({"false", "0", "0.0", "no", "n", "f"})


def offending_ids(
    frame: pd.DataFrame, mask: pd.Series | np.ndarray, id_column: str = ID
) -> list[str]:
    """A few real ids of the offending rows (row numbers only when the table has no id)."""
    ids = frame[id_column] if id_column in frame.columns else pd.Series(frame.index)
    return ids[np.asarray(mask)].head(5).astype(str).tolist()


def _as_text(series: pd.Series) -> pd.Series:
    """Stripped strings with blanks and nulls as NaN (object dtype)."""
    missing = series.isna()
    text = series.astype(str).str.strip().astype(object)
    text[missing.to_numpy()] = np.nan
    return text.mask(text == "")


def all_distinct(values: pd.Series) -> bool:
    """True when no present value occurs twice. Ids usually arrive sorted: one pass of
    comparisons proves that; otherwise the values are hashed."""
    present = values.dropna().to_numpy()
    try:
        if len(present) < 2 or bool((present[1:] > present[:-1]).all()):
            return True
    except TypeError:  # values that do not compare (mixed types)
        pass
    return bool(pd.Index(present).is_unique)


def parse_number(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Return (float values, mask of present-but-unparseable or infinite values)."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        values = series.astype("float64")
        return values, pd.Series(np.isinf(values.to_numpy()), index=series.index)
    text = _as_text(series)
    values = pd.to_numeric(text, errors="coerce").astype("float64")
    bad = (text.notna() & values.isna()) | np.isinf(values)
    return values, bad


def parse_bool(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Return (nullable boolean values, mask of unparseable values)."""
    if pd.api.types.is_bool_dtype(series):
        return series.astype("boolean"), pd.Series(False, index=series.index)
    text = _as_text(series).str.lower()
    values = pd.Series(pd.NA, index=series.index, dtype="boolean")
    values[text.isin(TRUE_STRINGS).to_numpy()] = True
    values[text.isin(FALSE_STRINGS).to_numpy()] = False
    bad = text.notna() & values.isna()
    return values, bad


def read_cell(value: str, kind: str) -> tuple[object, bool]:
    """One text cell as ingest reads that kind of column (the same parse_bool,
    parse_number and stripping): (the value, None when blank; whether it was readable).
    The API reads the words of a CSV row ("Yes", " 29.85", "") with it."""
    if kind == "category" and value and value == value.strip():
        return value, True  # what _as_text keeps as it is: no Series on the request path
    cell = pd.Series([value], dtype=object)
    if kind == "bool":
        parsed, bad = parse_bool(cell)
    elif kind == "category":
        parsed, bad = _as_text(cell), pd.Series([False])
    else:
        parsed, bad = parse_number(cell)
    if bool(bad.iloc[0]):
        return None, False
    found = parsed.iloc[0]
    if pd.isna(found):
        return None, True
    return (float(found) if kind != "category" else found), True


def null_rule(
    file: str,
    col: Column,
    rate: float,
    default_rate: float,
    ids: Callable[[], list[str]],
    id_column: str = ID,
) -> None:
    """The max_null_rate rule on a column's missing share; `ids` finds a few offending ids
    when it fails (the dask engine sums the share over partitions and calls this once)."""
    limit = default_rate if col.max_null_rate is None else col.max_null_rate
    if rate > limit:
        raise DataValidationError(
            file,
            col.name,
            "max_null_rate",
            f"{rate:.1%} of values are missing, the limit is {limit:.1%}",
            ids(),
            id_column,
        )


def coerce_column(
    frame: pd.DataFrame,
    file: str,
    col: Column,
    default_null_rate: float | None,
    id_column: str = ID,
) -> pd.Series:
    """Coerce one column to its kind, enforcing dtype, null, range and category rules
    (`default_null_rate` None: no null-rate rule here, the caller applies `null_rule`).

    Errors name the file, the column, the rule and a few ids from `id_column`."""

    def fail(rule: str, detail: str, mask: pd.Series | None = None) -> DataValidationError:
        ids = [] if mask is None else offending_ids(frame, mask, id_column)
        return DataValidationError(file, col.name, rule, detail, ids, id_column)

    raw = frame[col.name]
    kind = col.kind
    if kind in ("id", "category"):
        values = _as_text(raw)
        bad = pd.Series(False, index=raw.index)
    elif kind in ("bool", "label"):
        values, bad = parse_bool(raw)
    elif kind == "date":
        text = _as_text(raw)
        parsed = pd.to_datetime(text, format="%Y-%m-%d", errors="coerce")
        bad = text.notna() & parsed.isna()
        # strftime in C, once per distinct date; rows share its str
        codes, dates = pd.factorize(parsed)
        iso = np.datetime_as_string(dates.to_numpy(), unit="D").astype(object)
        values = pd.Series(np.append(iso, np.nan)[codes], index=raw.index, dtype=object)
    else:
        values, bad = parse_number(raw)

    if bad.any():
        expected = {
            "bool": "true/false",
            "label": "a binary label",
            "date": "an ISO date YYYY-MM-DD",
        }.get(kind, "a finite number")
        examples = raw[bad.to_numpy()].head(3).tolist()
        rule = "binary_label" if kind == "label" else "dtype"
        raise fail(rule, f"expected {expected}, got {examples}", bad)

    missing = values.isna()
    if kind == "label" and missing.any():
        raise fail("binary_label", "labels must not be missing", missing)
    if default_null_rate is not None:
        rate = float(missing.mean()) if len(missing) else 0.0
        found = lambda: offending_ids(frame, missing, id_column)  # noqa: E731
        null_rule(file, col, rate, default_null_rate, found, id_column)

    if kind == "id":
        if not all_distinct(values):
            dup = values.duplicated(keep=False) & values.notna()
            raise fail("unique_id", f"{int(dup.sum())} rows share an id", dup)
    elif kind in ("count", "amount"):
        negative = values < 0
        if negative.any():
            raise fail("non_negative", f"{int(negative.sum())} negative values "
                       f"(min {values.min():g})", negative)  # fmt: skip
        if kind == "count":
            fractional = values.notna() & (values != np.floor(values))
            if fractional.any():
                raise fail("dtype", "expected whole counts", fractional)
            if not missing.any():
                values = values.astype("int64")
    elif kind == "category" and col.categories:
        unknown = values.notna() & ~values.isin(col.categories)
        if unknown.any():
            seen = sorted(values[unknown].unique().tolist())[:5]
            allowed = list(col.categories)
            raise fail(
                "allowed_categories", f"unexpected values {seen}; allowed {allowed}", unknown
            )
    if kind in ("bool", "label") and not missing.any():
        values = values.astype(bool)
    return values.rename(col.name)


def validate_table(
    frame: pd.DataFrame,
    table: Table,
    file: str,
    default_null_rate: float | None,
    id_column: str = ID,
) -> pd.DataFrame:
    """Check one table against its schema and return it typed, in schema column order."""
    if len(frame) == 0:
        raise DataValidationError(file, "*", "empty_file", "the table has no rows")
    for col in table.columns:
        if col.name not in frame.columns:
            raise DataValidationError(
                file,
                col.name,
                "missing_column",
                f"required column is absent; found {list(frame.columns)[:12]}",
            )
    frame = frame.reset_index(drop=True)
    typed = {
        col.name: coerce_column(frame, file, col, default_null_rate, id_column)
        for col in table.columns
    }
    return pd.DataFrame(typed)


def check_same_ids(tables: Mapping[str, pd.DataFrame], files: Mapping[str, str]) -> None:
    """Every table of a snapshot must describe the same users."""
    names = list(tables)
    base_name = names[0]
    base = pd.Index(tables[base_name][ID])
    for name in names[1:]:
        other = pd.Index(tables[name][ID])
        if other.equals(base) or (len(other) == len(base) and other.isin(base).all()):
            continue
        extra = other.difference(base)
        missing = base.difference(other)
        detail = (
            f"{len(missing)} ids of {files[base_name]} are absent here, {len(extra)} ids are extra"
        )
        sample = list(missing[:3]) + list(extra[:2])
        raise DataValidationError(files[name], ID, "same_ids", detail, sample)
