"""prepare: join the snapshot at as_of, split train/test, write online and drift tables."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sklearn.model_selection import train_test_split

from churn import engine
from churn.errors import ChurnError, DataValidationError
from churn.ingest import MANIFEST, RAW_DIR
from churn.io import read_json, staged_dir, write_json, write_table
from churn.params import Params
from churn.schema import ID, LABEL, LABEL_TABLE

log = logging.getLogger("churn.prepare")

PREPARED_DIR = Path("data/prepared")

# The stage works on Arrow tables (columnar, strings in one buffer, joins and casts in
# C++): a 10 M-user snapshot as pandas objects took 5x the time and memory. The pandas
# functions below are the same code for callers that hold frames (monitor, tests).


def feature_spec(kinds: dict[str, str]) -> list[dict[str, str]]:
    """Model features in a stable order. Dates (signup_date) are not features: their age
    grows with every snapshot by construction, so they would always read as drift;
    months_active carries tenure."""
    return [{"name": col, "kind": kind} for col, kind in kinds.items() if kind != "date"]


def join_tables(tables: Mapping[str, pa.Table]) -> pa.Table:
    """One row per user, sorted by user_id: every table's columns side by side, labels
    last when present. Every table must hold each user exactly once (ingest checks it;
    this is the join's own guard, so a hand-edited data/raw cannot pair the wrong rows)."""
    names = [n for n in tables if n != LABEL_TABLE] + [n for n in tables if n == LABEL_TABLE]
    ids: pa.ChunkedArray | None = None
    columns: dict[str, pa.ChunkedArray] = {}
    for name in names:
        table = tables[name]
        ordered = _strictly_increasing(table[ID])  # usual: no copy, and unique by that
        if not ordered:
            table = table.take(pc.sort_indices(table, sort_keys=[(ID, "ascending")]))
        if ids is None:
            ids = table[ID]
            if not ordered and pc.count_distinct(ids, mode="all").as_py() != len(ids):
                raise ChurnError(f"table '{name}': {ID} is not unique; one row per user")
            columns[ID] = ids
        elif not table[ID].equals(ids):
            raise ChurnError(
                f"table '{name}' does not hold the same users, once each, as table "
                f"'{names[0]}' ({len(table)} rows vs {len(ids)}): cannot join on {ID}"
            )
        columns.update((col, table[col]) for col in table.column_names if col != ID)
    return pa.table(columns)


def _strictly_increasing(values: pa.ChunkedArray) -> bool:
    values = values.combine_chunks()
    if len(values) < 2:
        return True
    after = pc.greater(values.slice(1), values.slice(0, len(values) - 1))
    return bool(pc.all(pc.fill_null(after, False)).as_py())


def feature_table(joined: pa.Table, kinds: dict[str, str]) -> pa.Table:
    """Model-ready columns: numbers and booleans as float64 (missing: null, NaN in pandas),
    categories as text, the label as bool; dates are left out."""
    columns = {ID: pc.cast(joined[ID], pa.string())}
    for col, kind in kinds.items():
        if kind == "date":
            continue
        target = pa.float64() if kind in ("numeric", "bool") else pa.string()
        columns[col] = pc.cast(joined[col], target)
    if LABEL in joined.column_names:
        columns[LABEL] = pc.cast(joined[LABEL], pa.bool_())
    return pa.table(columns)


def join_snapshot(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """`join_tables` for pandas frames."""
    arrow = {name: pa.Table.from_pandas(frame, preserve_index=False)
             for name, frame in tables.items()}  # fmt: skip
    return join_tables(arrow).to_pandas()


def build_features(joined: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    """`feature_table` for a pandas frame."""
    return feature_table(pa.Table.from_pandas(joined, preserve_index=False), kinds).to_pandas()


def split_indices(labels: np.ndarray, test_size: float, random_state: int) -> tuple:
    """Row numbers of a stratified train/test split, reproducible from random_state."""
    classes, counts = np.unique(labels, return_counts=True)
    if len(counts) < 2 or counts.min() < 2:
        shown = {c.item(): int(n) for c, n in zip(classes, counts, strict=True)}
        raise ChurnError(f"cannot split: label counts {shown} need both classes")
    return train_test_split(
        np.arange(len(labels)), test_size=test_size, random_state=random_state, stratify=labels
    )


def split(
    frame: pd.DataFrame, test_size: float, random_state: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`split_indices` applied to a pandas frame."""
    train, test = split_indices(frame[LABEL].to_numpy(), test_size, random_state)
    return frame.iloc[train].reset_index(drop=True), frame.iloc[test].reset_index(drop=True)


def _resolve(manifest: dict, wanted: str, key: str, raw_dir: Path) -> str:
    dates = manifest["snapshots"]
    if wanted == "latest":
        return dates[-1]
    if wanted not in dates:
        raise DataValidationError(
            str(raw_dir / MANIFEST),
            key,
            "as_of_present",
            f"no snapshot for {wanted}; available {dates}",
        )
    return wanted


def next_labelled(raw_dir: Path, manifest: dict, as_of: str) -> str | None:
    """The first snapshot after `as_of` that has labels (for out-of-time evaluation)."""
    later = [d for d in manifest["snapshots"] if d > as_of]
    return next((d for d in later if (raw_dir / d / f"{LABEL_TABLE}.parquet").exists()), None)


def snapshot_table(raw_dir: Path, manifest: dict, as_of: str) -> pa.Table:
    """The model-ready table of one ingested snapshot (Arrow)."""
    folder = raw_dir / as_of
    tables = {}
    for name in manifest["tables"]:
        path = folder / f"{name}.parquet"
        if path.exists():
            tables[name] = pq.read_table(path)
    return feature_table(join_tables(tables), manifest["features"])


def load_snapshot(raw_dir: Path, manifest: dict, as_of: str) -> pd.DataFrame:
    """`snapshot_table` as a pandas frame."""
    return snapshot_table(raw_dir, manifest, as_of).to_pandas()


def _has_labels(raw_dir: Path, manifest: dict, as_of: str) -> bool:
    return (
        LABEL_TABLE in manifest["tables"] and (raw_dir / as_of / f"{LABEL_TABLE}.parquet").exists()
    )


def outputs_of(wanted: list[str], has_labels: bool, columns: list[str]) -> dict[str, list[str]]:
    """The files a snapshot's roles make and their columns (sorted by user id, as joined);
    train and test, the split, come apart."""
    files = {}
    for role in ("reference", "current", "oot"):
        if role in wanted:
            files[f"{role}.parquet"] = columns
    if "online" in wanted:
        files["online_features.parquet"] = [c for c in columns if c != LABEL]
        if has_labels:
            files["online_labels.parquet"] = [ID, LABEL]
    return files


def draw_split(labels: np.ndarray, params: Params) -> tuple[np.ndarray, np.ndarray, dict]:
    """The train and test row numbers of the training snapshot, and the spec's counts."""
    train, test = split_indices(labels, params.prepare.test_size, params.random_state)
    counts = {"n_train": len(train), "n_test": len(test),
              "train_positive_rate": float(np.mean(labels[train]))}  # fmt: skip
    return train, test, counts


def write_roles(table: pa.Table, wanted: list[str], tmp: Path, params: Params) -> dict:
    """Write what one joined snapshot is for; return the spec's split counts and, for the
    training snapshot, the table's empty shape ("empty")."""
    written: dict = {}
    if "reference" in wanted:
        train, test, counts = draw_split(table[LABEL].to_numpy(), params)
        write_table(table.take(train), tmp / "train.parquet")
        write_table(table.take(test), tmp / "test.parquet")
        written.update(counts, empty=table.slice(0, 0))
    has_labels = LABEL in table.column_names
    for name, columns in outputs_of(wanted, has_labels, table.column_names).items():
        write_table(table.select(columns), tmp / name)
    return written


def run(params: Params, raw_dir: Path = RAW_DIR, out_dir: Path = PREPARED_DIR) -> dict:
    """Write the training split, the test split, the drift pair, the out-of-time month and
    the online month; return the spec (features.json).

    One snapshot is held at a time (the newest month is usually the drift current, the
    online table and the out-of-time labels at once)."""
    manifest_path = raw_dir / MANIFEST
    if not manifest_path.exists():
        raise ChurnError(f"{manifest_path}: not found; run `churn ingest` (or `dvc repro`) first")
    manifest = read_json(manifest_path)
    as_of = _resolve(manifest, params.as_of, "as_of", raw_dir)
    current_as_of = _resolve(manifest, params.drift.current_as_of, "drift.current_as_of", raw_dir)
    online_as_of = manifest["snapshots"][-1]
    oot_as_of = next_labelled(raw_dir, manifest, as_of)
    roles: dict[str, list[str]] = {}  # snapshot -> the files made from it, reference first
    for date, role in ((as_of, "reference"), (current_as_of, "current"),
                       (online_as_of, "online"), (oot_as_of, "oot")):  # fmt: skip
        if date is not None:
            roles.setdefault(date, []).append(role)
    spec: dict = {}
    empty: pa.Table | None = None  # the shape of the files a month may lack
    with staged_dir(out_dir) as tmp, engine.maybe_client(params) as cluster:
        for date, wanted in roles.items():
            if "reference" in wanted and not _has_labels(raw_dir, manifest, date):
                raise DataValidationError(str(raw_dir / as_of), LABEL, "labels_present",
                                          "the training snapshot has no labels")  # fmt: skip
            if cluster is None:
                table = snapshot_table(raw_dir, manifest, date)
                log.info("joined snapshot %s: %d users (%s)", date, len(table), ", ".join(wanted))
                written = write_roles(table, wanted, tmp, params)
                del table
            else:
                written = engine.prepare_snapshot(cluster, raw_dir, manifest, date, wanted, tmp,
                                                  params)  # fmt: skip
            empty = written.pop("empty", empty)
            spec.update(written)
        # always written (no rows when absent), so dvc.yaml can name them as deps
        if not oot_as_of:
            write_table(empty, tmp / "oot.parquet")
        if not (tmp / "online_labels.parquet").exists():
            write_table(empty.select([ID, LABEL]), tmp / "online_labels.parquet")
        spec = {
            "id": ID,
            "label": LABEL,
            "features": feature_spec(manifest["features"]),
            "as_of": as_of,
            "current_as_of": current_as_of,
            "online_as_of": online_as_of,
            "oot_as_of": oot_as_of,
            **spec,
        }
        write_json(tmp / "features.json", spec)
    log.info(
        "train %d rows, test %d rows (as_of %s); online features %s; drift current %s; "
        "out-of-time labels %s",
        spec["n_train"],
        spec["n_test"],
        as_of,
        online_as_of,
        current_as_of,
        oot_as_of or "none (no later month has labels)",
    )
    return spec
