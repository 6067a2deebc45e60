"""Shared fixtures: small params, tiny course-layout snapshots, the real course data."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from churn import synthetic
from churn.params import Params, parse_params

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "streamflow"
LINEAGE = "registry/streamflow-churn"  # the built-in data's registry folder
CHAMPION_JSON = f"{LINEAGE}/champion.json"
HISTORY_JSONL = f"{LINEAGE}/history.jsonl"

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def small_params(**overrides: object) -> Params:
    """Default params with a small synthetic source and train.model pinned to hist_gb
    (tests vary train.hist_gb.* to get a weaker model); overrides are dotted keys."""
    raw: dict = {"ingest": {"synthetic": {"n_users": 400, "n_months": 2}},
                 "train": {"model": "hist_gb"}}  # fmt: skip
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return parse_params(raw)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data/streamflow is absent")
    return SHARED_DATA


def write_course_snapshots(root: Path, n_users: int = 60, n_months: int = 2) -> Path:
    """Write synthetic months as CSV folders month_000, month_001… (the course layout)."""
    params = small_params(**{"ingest.synthetic.n_users": n_users,
                             "ingest.synthetic.n_months": n_months})  # fmt: skip
    for index, (_, tables) in enumerate(synthetic.generate(params.ingest.synthetic)):
        folder = root / f"month_{index:03d}"
        folder.mkdir(parents=True)
        for name, frame in tables.items():
            frame.to_csv(folder / f"{name}.csv", index=False)
    return root


@pytest.fixture
def course_dir(tmp_path: Path) -> Path:
    return write_course_snapshots(tmp_path / "source")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run stages with the repo-relative paths (data/, models/, reports/) in a temp dir."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    return work


def read_csv_text(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str)
