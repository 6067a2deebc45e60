"""Shared by the model tests: one snapshot validated, joined and featurised the way
ingest + prepare do it, from the synthetic generator or the course files."""

from __future__ import annotations

from pathlib import Path

from churn import ingest, synthetic
from churn.prepare import build_features, feature_spec, join_snapshot
from churn.schema import COURSE_TABLE_NAMES

MODELS = ["hist_gb", "random_forest", "logistic_regression"]


def frame_and_spec(raw_tables, files, as_of):
    """Validate, join and featurise one snapshot the way ingest + prepare do."""
    typed = ingest.validate_snapshot(raw_tables, files, 0.05)
    kinds = ingest.feature_kinds(typed)
    frame = build_features(join_snapshot(typed), kinds)
    spec = {"id": "user_id", "label": "churn_label", "as_of": as_of,
            "features": feature_spec(kinds)}  # fmt: skip
    return frame, spec


def training_data(params):
    as_of, tables = next(synthetic.generate(params.ingest.synthetic))
    return frame_and_spec(tables, {name: f"synthetic/{name}" for name in tables}, as_of)


def course_month(shared_data: Path, month: str = "month_000", as_of: str = "2024-01-31"):
    paths = {name: shared_data / month / f"{name}.csv" for name in COURSE_TABLE_NAMES}
    raw = {name: ingest.read_table_file(path) for name, path in paths.items()}
    return frame_and_spec(raw, {k: str(v) for k, v in paths.items()}, as_of)


def scores(model, frame):
    return model.predict_proba(frame)[:, 1]
