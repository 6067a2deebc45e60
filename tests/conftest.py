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


def pytest_configure(config: pytest.Config) -> None:
    """One BLAS/OpenMP thread in the test processes and their children, as every `churn`
    command pins (churn.cli._pin_threads): in-process fits otherwise ran OpenMP threads
    that spin-wait on a busy CPU (a test that took seconds took minutes beside other
    jobs). Tests about thread counts set them explicitly."""
    from threadpoolctl import threadpool_limits

    from churn.cli import THREAD_VARIABLES

    for variable in THREAD_VARIABLES:
        os.environ[variable] = "1"
    threadpool_limits(1)


# The heaviest test files first (seconds per file, setup + call + teardown, from
# --durations in a `scripts/test` run on two idle cores, 2026-12-06, three processes
# sharing them). scripts/test runs three pytest processes that take one file at a time in
# this order (--no-loadscope-reorder): started first, the long files run side by side
# instead of one process finishing alone on one.
HEAVY_FIRST = (
    "tests/integration/test_tour.py",  # 448 s
    "tests/pipeline/test_experiments.py",  # 339 s
    "tests/pipeline/test_dvc_pipeline.py",  # 337 s
    "tests/integration/test_monitor.py",  # 281 s
    "tests/integration/test_serving_process.py",  # 277 s
    "tests/integration/test_team_replicas.py",  # 220 s
    "tests/integration/test_promotion.py",  # 172 s
    "tests/integration/test_online_postgres.py",  # 166 s
    "tests/pipeline/test_own_data.py",  # 158 s
    "tests/integration/test_dask_cluster.py",  # 136 s
    "tests/pipeline/test_ci_scripts.py",  # 126 s
    "tests/pipeline/test_dask_engine.py",  # 104 s
    "tests/api/test_routes.py",  # 80 s
    "tests/integration/test_mlflow_server.py",  # 65 s
    "tests/data/test_columns.py",  # 65 s
    "tests/model/test_search.py",  # 49 s
    "tests/integration/test_drift.py",  # 44 s
    "tests/data/test_table_source.py",  # 38 s
    "tests/unit/test_modelfile.py",  # 34 s
    "tests/api/test_compiled_start.py",  # 31 s
    "tests/model/test_real_data.py",  # skips without ../shared; 42 s with it
    "tests/integration/test_mlflow_tracking.py",  # 23 s
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Heaviest files first (HEAVY_FIRST); within a file, and among the rest, the order
    stays the collection order (the sort is stable)."""
    rank = {path: index for index, path in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


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
