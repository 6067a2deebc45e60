"""ingest: source (synthetic | snapshots | table) -> validated data/raw/<as_of>/ snapshots."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from churn import synthetic
from churn.errors import ChurnError, DataValidationError
from churn.io import staged_dir, write_json, write_parquet
from churn.params import IngestParams, Params, TableParams
from churn.schema import (
    COURSE_TABLES,
    FEATURE_KINDS,
    ID,
    LABEL,
    LABEL_TABLE,
    Column,
    Table,
)
from churn.validate import check_same_ids, parse_bool, parse_number, validate_table

log = logging.getLogger("churn.ingest")

RAW_DIR = Path("data/raw")
MANIFEST = "manifest.json"
Snapshot = dict[str, pd.DataFrame]
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# --- reading ------------------------------------------------------------------


def read_table_file(path: Path) -> pd.DataFrame:
    """Read a CSV (every cell as text, so validation sees what was written) or parquet."""
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, skipinitialspace=False)
    except pd.errors.EmptyDataError:
        raise DataValidationError(str(path), "*", "empty_file", "the file is empty") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataValidationError(str(path), "*", "readable", str(exc).splitlines()[0]) from None


def _table_path(folder: Path, name: str) -> Path:
    for suffix in (".parquet", ".csv"):
        candidate = folder / f"{name}{suffix}"
        if candidate.exists():
            return candidate
    raise DataValidationError(
        str(folder / f"{name}.csv"), "*", "table_present", f"table '{name}' not found in {folder}"
    )


def validate_snapshot(
    raw: Snapshot, files: dict[str, str], null_rate: float, consume: bool = False
) -> Snapshot:
    """Validate the six course tables of one snapshot and return them typed. With
    `consume`, each table leaves `raw` once validated (a source's own dict), so a month
    is not held twice, raw and typed (10 M users: ~2 GB)."""
    take = raw.pop if consume else raw.__getitem__
    typed = {t.name: validate_table(take(t.name), t, files[t.name], null_rate)
             for t in COURSE_TABLES}  # fmt: skip
    check_same_ids(typed, files)
    return typed


# --- sources --------------------------------------------------------------------


def from_synthetic(p: IngestParams) -> Iterator[tuple[str, Snapshot]]:
    for as_of, tables in synthetic.generate(p.synthetic):
        files = {name: f"synthetic:{as_of}/{name}" for name in tables}
        yield as_of, validate_snapshot(tables, files, p.max_null_rate, consume=True)


def snapshot_folders(root: Path, first_as_of: str | None) -> list[tuple[str, Path]]:
    """Month folders under `root` with their as_of: the folder name if it is a date,
    otherwise consecutive month-ends from `first_as_of` in sorted folder order."""
    if not root.is_dir():
        raise ChurnError(f"{root}: snapshot folder not found (ingest.path)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ChurnError(f"{root}: no month folders found")
    if all(ISO_DATE.match(f.name) for f in folders):
        return [(f.name, f) for f in folders]
    if first_as_of is None:
        raise ChurnError(
            f"{root}: folder names {[f.name for f in folders][:3]} are not dates; "
            "set ingest.snapshots.first_as_of to the first folder's month-end"
        )
    return list(zip(synthetic.month_ends(first_as_of, len(folders)), folders, strict=True))


def from_snapshots(p: IngestParams) -> Iterator[tuple[str, Snapshot]]:
    for as_of, folder in snapshot_folders(Path(p.path), p.snapshots.first_as_of):
        paths = {t.name: _table_path(folder, t.name) for t in COURSE_TABLES}
        raw = {name: read_table_file(path) for name, path in paths.items()}
        log.info("read %s -> %s (%d users)", folder, as_of, len(raw["users"]))
        files = {k: str(v) for k, v in paths.items()}
        yield as_of, validate_snapshot(raw, files, p.max_null_rate, consume=True)


# A flat-table column is numeric when this share of its non-blank values are numbers; the
# rest are then reported as errors (file, column, rule, ids), never a silently dropped column.
NUMERIC_SHARE = 0.9
COURSE_COLUMNS = {
    c.name: c for t in COURSE_TABLES for c in t.columns if c.kind not in ("id", "label")
}


# Automatic exclusion of columns that cannot be honest features (each named in a warning)
MIN_ROWS_TO_JUDGE = 20
TEXT_DISTINCT_SHARE, TEXT_MIN_LEVELS = 0.05, 100


def _as_numbers(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    """A column's non-blank values as stripped text, and as numbers (NaN where not one)."""
    text = series.dropna().astype(str).str.strip()
    text = text[text != ""]
    return text, pd.to_numeric(text, errors="coerce")


def exclusion_reason(series: pd.Series) -> str | None:
    """Why a flat-table column should not be a feature, or None to keep it."""
    text, numbers = _as_numbers(series)
    if text.nunique() <= 1:
        return "constant (one value)"
    if len(text) < MIN_ROWS_TO_JUDGE:
        return None
    if numbers.notna().all():
        whole = bool((numbers == numbers.round()).all())
        monotonic = numbers.is_monotonic_increasing or numbers.is_monotonic_decreasing
        if whole and numbers.is_unique and monotonic and len(text) == len(series):
            return "row-number-like (whole, unique, monotonic)"
        return None
    if numbers.notna().mean() >= NUMERIC_SHARE:
        return None  # numeric with a few bad cells: validation names them
    levels = text.nunique()
    if levels > 0.5 * len(text):
        return f"id- or name-like text ({levels} distinct values in {len(text)} rows)"
    if levels > TEXT_MIN_LEVELS and levels > TEXT_DISTINCT_SHARE * len(text):
        return f"free-text-like ({levels} distinct values, > {TEXT_MIN_LEVELS} and > 5 % of rows)"
    return None


NUMERIC_LOOKING = 0.5  # a column whose non-blank cells are mostly numbers is meant as numbers


def numeric_cells(frame: pd.DataFrame, name: str, t: TableParams, file: str) -> pd.Series:
    """A mostly numeric column's non-numeric cells ("abc", "n/a", "?"): refused past
    ingest.table.max_non_numeric_share, naming the share and ids (such a column used to be
    dropped as id-like text, or read as a category); up to it, read as missing."""
    series = frame[name]
    text, numbers = _as_numbers(series)
    if not len(text) or numbers.notna().mean() < NUMERIC_LOOKING or numbers.notna().all():
        return series
    bad = numbers.isna()
    share = float(bad.mean())
    examples = sorted(text[bad].unique().tolist())[:3]
    ids = frame.loc[bad[bad].index, t.id_column].head(3).tolist()
    if share > t.max_non_numeric_share:
        raise DataValidationError(
            file, name, "numeric",
            f"{share:.1%} of its non-blank cells are not numbers ({examples}), over "
            f"ingest.table.max_non_numeric_share {t.max_non_numeric_share:.1%}; fix them, or "
            "leave the column out with ingest.table.drop_columns", ids, t.id_column,
        )  # fmt: skip
    log.warning("%s: column '%s': %d non-numeric cell(s) %s read as missing (%.2f%%, e.g. %s "
                "%s)", file, name, int(bad.sum()), examples, 100 * share, t.id_column,
                ", ".join(map(str, ids)))  # fmt: skip
    return series.mask(series.index.isin(bad[bad].index))


def infer_column(series: pd.Series, name: str, non_negative: bool = False) -> Column:
    """Infer a feature column's kind from a flat table.

    A column named like one of the course contract's gets that column's rules (counts and
    money non-negative, counts whole), as the snapshots source does; so does one listed in
    ingest.table.non_negative (as money).
    """
    course = COURSE_COLUMNS.get(name)
    if course is not None:
        return Column(name, course.kind, max_null_rate=course.max_null_rate)
    if non_negative:
        return Column(name, "amount")
    present = series.dropna()
    if pd.api.types.is_bool_dtype(series):
        return Column(name, "bool")
    _, bad_bool = parse_bool(present)
    if len(present) and not bad_bool.any():
        return Column(name, "bool")
    text, numbers = _as_numbers(series)
    if len(text) and numbers.notna().mean() >= NUMERIC_SHARE:
        return Column(name, "numeric")
    return Column(name, "category")


def _label_column(frame: pd.DataFrame, t: TableParams, file: str) -> pd.Series:
    raw = frame[t.label_column]
    ids = frame[t.id_column]

    def refuse(rule: str, detail: str, mask: pd.Series | None = None) -> DataValidationError:
        shown = [] if mask is None else ids[mask.to_numpy()].head(5).tolist()
        return DataValidationError(file, t.label_column, rule, detail, shown, t.id_column)

    if t.positive_label is None:
        labels, bad = parse_bool(raw)
        if bad.any() or labels.isna().any():
            shown = sorted(raw.dropna().astype(str).unique().tolist())[:5]
            raise refuse("binary_label", f"values {shown} are not yes/no, true/false or 1/0; "
                         "set ingest.table.positive_label", bad | labels.isna())  # fmt: skip
        labels = labels.astype(bool)
    else:
        text = raw.astype(str).str.strip()
        shown = sorted(text.unique().tolist())[:5]
        if raw.isna().any() or text.nunique() > 2:
            missing = raw.isna() if raw.isna().any() else None
            raise refuse("binary_label", f"expected two values, got {shown}", missing)
        if t.positive_label not in set(text):
            wanted = t.positive_label
            raise refuse("positive_label", f"ingest.table.positive_label {wanted!r} matches "
                         f"no value; the column holds {shown}")  # fmt: skip
        labels = text == t.positive_label
    if labels.nunique() < 2:
        only = "churn" if bool(labels.iloc[0]) else "no churn"
        raise refuse("two_classes", f"every row is {only}: a churn model needs both classes "
                     "(check ingest.table.label_column and positive_label)")  # fmt: skip
    return labels


def from_table(p: IngestParams) -> Iterator[tuple[str, Snapshot]]:
    t = p.table
    path = Path(p.path)
    if not path.is_file():
        raise ChurnError(f"{path}: flat churn table not found (ingest.path)")
    file = str(path)
    frame = read_table_file(path)
    if len(frame) == 0:
        raise DataValidationError(file, "*", "empty_file", "the table has no rows")
    for needed in (t.id_column, t.label_column, t.date_column, *t.non_negative, *t.signed,
                   *t.drop_columns):  # fmt: skip
        if needed is not None and needed not in frame.columns:
            raise DataValidationError(
                file, needed, "missing_column", f"configured column absent; found {list(frame)}"
            )
    clash = {t.id_column, t.label_column, t.date_column} & set(t.drop_columns)
    if clash:
        raise ChurnError(f"ingest.table.drop_columns names {sorted(clash)}: the id, label or "
                         "date column cannot be dropped")  # fmt: skip
    ids = validate_table(frame, Table("ids", (Column(t.id_column, "id", max_null_rate=0.0),)),
                         file, 0.0, t.id_column)[t.id_column]  # fmt: skip
    frame = frame.assign(**{t.id_column: ids.to_numpy()})
    labels = _label_column(frame, t, file)
    if t.date_column is not None:
        dates = validate_table(
            frame, Table("dates", (Column(t.date_column, "date", max_null_rate=0.0),)), file, 0.0,
            t.id_column,
        )[t.date_column]  # fmt: skip
    elif t.as_of is not None:
        dates = pd.Series(t.as_of, index=frame.index)
    else:
        raise ChurnError("ingest.table: set date_column, or as_of for a single-snapshot table")
    skip = {t.id_column, t.label_column, t.date_column}
    columns = []
    for name in frame.columns:
        if name in skip:
            continue
        if name in t.drop_columns:
            log.info("%s: leaving out column '%s' (ingest.table.drop_columns)", file, name)
            continue
        declared = name in COURSE_COLUMNS or name in t.non_negative
        frame[name] = numeric_cells(frame, name, t, file)
        why = None if declared else exclusion_reason(frame[name])
        if why is not None:
            log.warning("%s: excluding column '%s': %s; list it in ingest.table.drop_columns "
                        "to silence this", file, name, why)  # fmt: skip
            continue
        columns.append(infer_column(frame[name], name, non_negative=name in t.non_negative))
    columns = never_negative(frame, columns, (dates == dates.min()).to_numpy(), t, file)
    schema = Table("features", (Column(t.id_column, "id", max_null_rate=0.0), *columns))
    for as_of in sorted(dates.unique()):
        rows = frame[(dates == as_of).to_numpy()]
        typed = validate_table(rows, schema, file, p.max_null_rate, t.id_column)
        typed = typed.rename(columns={t.id_column: ID})
        label_frame = pd.DataFrame({ID: typed[ID], LABEL: labels[rows.index].to_numpy()})
        yield str(as_of), {"features": typed, LABEL_TABLE: label_frame}


def never_negative(
    frame: pd.DataFrame, columns: list[Column], first: np.ndarray, t: TableParams, file: str
) -> list[Column]:
    """Numeric columns with no negative value in the first snapshot's rows (`first`) become
    non-negative (tenure, counts, money): a negative one in any snapshot is then a named
    error, and the feature contract marks them so the API refuses one too. Columns in
    ingest.table.signed stay as they are."""
    out, inferred = [], []
    for col in columns:
        if col.kind == "numeric" and col.name not in t.signed:
            values, _ = parse_number(frame.loc[first, col.name])
            present = values.dropna()
            if len(present) and bool((present >= 0).all()):
                col = Column(col.name, "amount", max_null_rate=col.max_null_rate)
                inferred.append(col.name)
        out.append(col)
    if inferred:
        log.info("%s: never negative in the first snapshot, so refused below 0 in every one: "
                 "%s (ingest.table.signed allows a column to go negative)", file,
                 ", ".join(inferred))  # fmt: skip
    return out


SOURCES = {"synthetic": from_synthetic, "snapshots": from_snapshots, "table": from_table}


# --- stage ------------------------------------------------------------------------


def feature_kinds(snapshot: Snapshot) -> dict[str, str]:
    """Model-facing kind of every feature column, from the typed tables."""
    kinds: dict[str, str] = {}
    course = {c.name: c.kind for t in COURSE_TABLES for c in t.columns}
    for name, frame in snapshot.items():
        if name == LABEL_TABLE:
            continue
        for col in frame.columns:
            if col == ID:
                continue
            kind = course.get(col)
            if kind is None:
                dtype = frame[col].dtype
                if pd.api.types.is_bool_dtype(dtype):
                    kind = "bool"
                elif pd.api.types.is_numeric_dtype(dtype):
                    kind = "numeric"
                else:
                    kind = "category"
            kinds[col] = "date" if kind == "date" else FEATURE_KINDS[kind]
    return kinds


def drop_features(kinds: dict[str, str], p: IngestParams) -> dict[str, str]:
    """Leave out ingest.snapshots.drop_columns (the table source never reads its own)."""
    if p.source == "table":
        return kinds
    unknown = sorted(set(p.snapshots.drop_columns) - set(kinds))
    if unknown:
        raise ChurnError(f"ingest.snapshots.drop_columns names {unknown}, which are not feature "
                         f"columns; they are {sorted(kinds)}")  # fmt: skip
    for name in p.snapshots.drop_columns:
        log.info("leaving out column '%s' (ingest.snapshots.drop_columns)", name)
    return {k: v for k, v in kinds.items() if k not in p.snapshots.drop_columns}


def _written_snapshots(params: Params, out: Path) -> Iterator[tuple[str, int, Snapshot]]:
    """Validate each snapshot of the source and write it under out/<as_of>/; yield (as_of,
    users, the first rows of its typed tables). engine: dask does it in partitions on a
    cluster (churn.engine), writing each table as a folder of id-range parts."""
    p = params.ingest
    if params.engine == "dask":
        from churn import engine

        yield from engine.ingest_snapshots(p, params.dask, out)
        return
    for as_of, tables in SOURCES[p.source](p):
        users = len(tables[LABEL_TABLE])
        head = {k: v.head(1000) for k, v in tables.items()}
        for name in list(tables):  # each table freed once written
            write_parquet(tables.pop(name), out / as_of / f"{name}.parquet")
        del tables  # before the source makes the next month
        yield as_of, users, head


def run(params: Params, out_dir: Path = RAW_DIR) -> dict:
    """Validate and write every snapshot into a staging folder; publish it only if all pass.

    Snapshots are written one at a time so memory holds a single month.
    """
    p = params.ingest
    dates: list[str] = []
    n_users: dict[str, int] = {}
    first: Snapshot | None = None
    with staged_dir(out_dir) as tmp:
        for as_of, users, tables in _written_snapshots(params, tmp):
            if as_of in n_users:
                raise ChurnError(f"{p.path}: two snapshots map to as_of {as_of}")
            dates.append(as_of)
            n_users[as_of] = users
            first = first if first is not None else tables
            log.info("validated snapshot %s (%d users) [%d]", as_of, users, len(dates))
        if first is None:
            raise ChurnError(f"{p.path}: the source produced no snapshot")
        dates.sort()
        manifest = {
            "source": p.source,
            "layout": "course" if "users" in first else "table",
            "snapshots": dates,
            "tables": list(first),
            "features": drop_features(feature_kinds(first), p),
            "n_users": {d: n_users[d] for d in dates},
        }
        write_json(tmp / MANIFEST, manifest)
    log.info("wrote %d snapshots to %s", len(dates), out_dir)
    warn_without_fee(manifest["features"], params.decision.fee_column)
    return manifest


FEE_LIKE = re.compile(r"fee|charge|price|bill|amount|cost|revenue|spend|monthly", re.IGNORECASE)


def warn_without_fee(kinds: dict[str, str], fee_column: str) -> list[str]:
    """Warn when decision.fee_column is not a column: every user is then valued at
    decision.customer_value, which moves the threshold and every expected value. Names the
    numeric columns that could be the fee (fee-like names first); returns them."""
    if kinds.get(fee_column) == "numeric":
        return []
    numeric = [name for name, kind in kinds.items() if kind == "numeric"]
    candidates = [n for n in numeric if FEE_LIKE.search(n)] or numeric
    log.warning(
        "decision.fee_column '%s' is not a numeric column of this data: every user is valued "
        "at decision.customer_value, not value_months x their fee. Columns that could be the "
        "fee: %s (e.g. `churn params set decision.fee_column=%s`)", fee_column,
        ", ".join(candidates[:5]) or "none", candidates[0] if candidates else "COLUMN",
    )  # fmt: skip
    return candidates
