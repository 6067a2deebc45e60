"""prepare: join the snapshot at as_of, split train/test, write online and drift tables."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from churn.errors import ChurnError, DataValidationError
from churn.ingest import MANIFEST, RAW_DIR
from churn.io import read_json, staged_dir, write_json, write_parquet
from churn.params import Params
from churn.schema import ID, LABEL, LABEL_TABLE

log = logging.getLogger("churn.prepare")

PREPARED_DIR = Path("data/prepared")


@dataclass(frozen=True)
class Prepared:
    train: pd.DataFrame
    test: pd.DataFrame
    online: pd.DataFrame
    reference: pd.DataFrame
    current: pd.DataFrame
    oot: pd.DataFrame | None  # the first later month with labels: out-of-time evaluation
    online_labels: pd.DataFrame | None  # the newest month's labels, when it has them (score)
    spec: dict


def feature_spec(kinds: dict[str, str]) -> list[dict[str, str]]:
    """Model features in a stable order. Dates (signup_date) are not features: their age
    grows with every snapshot by construction, so they would always read as drift;
    months_active carries tenure."""
    return [{"name": col, "kind": kind} for col, kind in kinds.items() if kind != "date"]


def join_snapshot(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per user: every table joined on user_id, labels last when present."""
    names = [n for n in tables if n != LABEL_TABLE]
    joined = tables[names[0]]
    for name in names[1:]:
        joined = joined.merge(tables[name], on=ID, how="inner", validate="one_to_one")
    if LABEL_TABLE in tables:
        joined = joined.merge(tables[LABEL_TABLE], on=ID, how="inner", validate="one_to_one")
    return joined.sort_values(ID, kind="stable").reset_index(drop=True)


def build_features(joined: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    """Model-ready columns: numbers and booleans as float64, categories as text."""
    out: dict[str, pd.Series] = {ID: joined[ID].astype(str)}
    for col, kind in kinds.items():
        values = joined[col]
        if kind == "date":
            continue
        if kind in ("numeric", "bool"):
            out[col] = pd.to_numeric(values.astype("Float64"), errors="coerce").astype("float64")
        else:
            out[col] = values.astype(object).where(values.notna(), None)
    if LABEL in joined.columns:
        out[LABEL] = joined[LABEL].astype(bool)
    return pd.DataFrame(out)


def split(
    frame: pd.DataFrame, test_size: float, random_state: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified train/test split, reproducible from random_state."""
    counts = frame[LABEL].value_counts()
    if len(counts) < 2 or counts.min() < 2:
        raise ChurnError(f"cannot split: label counts {counts.to_dict()} need both classes")
    train, test = train_test_split(
        frame, test_size=test_size, random_state=random_state, stratify=frame[LABEL]
    )
    return train.reset_index(drop=True), test.reset_index(drop=True)


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


def load_snapshot(raw_dir: Path, manifest: dict, as_of: str) -> pd.DataFrame:
    folder = raw_dir / as_of
    tables = {}
    for name in manifest["tables"]:
        path = folder / f"{name}.parquet"
        if path.exists():
            tables[name] = pd.read_parquet(path)
    return join_snapshot(tables)


def prepare(params: Params, raw_dir: Path = RAW_DIR) -> Prepared:
    manifest_path = raw_dir / MANIFEST
    if not manifest_path.exists():
        raise ChurnError(f"{manifest_path}: not found; run `churn ingest` (or `dvc repro`) first")
    manifest = read_json(manifest_path)
    as_of = _resolve(manifest, params.as_of, "as_of", raw_dir)
    current_as_of = _resolve(manifest, params.drift.current_as_of, "drift.current_as_of", raw_dir)
    online_as_of = manifest["snapshots"][-1]
    kinds = manifest["features"]
    oot_as_of = next_labelled(raw_dir, manifest, as_of)

    frames: dict[str, pd.DataFrame] = {}
    wanted = [as_of, current_as_of, online_as_of] + ([oot_as_of] if oot_as_of else [])
    for date in dict.fromkeys(wanted):
        frames[date] = build_features(load_snapshot(raw_dir, manifest, date), kinds)
        log.info("joined snapshot %s: %d users", date, len(frames[date]))
    reference = frames[as_of]
    if LABEL not in reference.columns:
        raise DataValidationError(
            str(raw_dir / as_of), LABEL, "labels_present", "the training snapshot has no labels"
        )
    train, test = split(reference, params.prepare.test_size, params.random_state)
    features = feature_spec(kinds)
    spec = {
        "id": ID,
        "label": LABEL,
        "features": features,
        "as_of": as_of,
        "current_as_of": current_as_of,
        "online_as_of": online_as_of,
        "oot_as_of": oot_as_of,
        "n_train": len(train),
        "n_test": len(test),
        "train_positive_rate": float(np.mean(train[LABEL])),
    }
    online = frames[online_as_of].drop(columns=[LABEL], errors="ignore")
    online_labels = frames[online_as_of][[ID, LABEL]] if LABEL in frames[online_as_of] else None
    oot = frames[oot_as_of] if oot_as_of else None
    return Prepared(train, test, online, reference, frames[current_as_of], oot, online_labels,
                    spec)  # fmt: skip


def run(params: Params, raw_dir: Path = RAW_DIR, out_dir: Path = PREPARED_DIR) -> Prepared:
    prepared = prepare(params, raw_dir)
    with staged_dir(out_dir) as tmp:
        write_parquet(prepared.train, tmp / "train.parquet")
        write_parquet(prepared.test, tmp / "test.parquet")
        write_parquet(prepared.online, tmp / "online_features.parquet")
        write_parquet(prepared.reference, tmp / "reference.parquet")
        write_parquet(prepared.current, tmp / "current.parquet")
        # always written (no rows when absent), so dvc.yaml can name them as deps
        empty = prepared.test.iloc[:0]
        write_parquet(empty if prepared.oot is None else prepared.oot, tmp / "oot.parquet")
        labels = empty[[ID, LABEL]] if prepared.online_labels is None else prepared.online_labels
        write_parquet(labels, tmp / "online_labels.parquet")
        write_json(tmp / "features.json", prepared.spec)
    log.info(
        "train %d rows, test %d rows (as_of %s); online features %s; drift current %s; "
        "out-of-time labels %s",
        len(prepared.train),
        len(prepared.test),
        prepared.spec["as_of"],
        prepared.spec["online_as_of"],
        prepared.spec["current_as_of"],
        prepared.spec["oot_as_of"] or "none (no later month has labels)",
    )
    return prepared
