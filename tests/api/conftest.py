"""A served registry built by the real stages in a temp dir: a champion (version 1) and a
weaker challenger (version 2, skipped by promote)."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from churn import drift, evaluate, ingest, prepare, promote, train
from churn.serve import Settings
from tests.conftest import small_params

TOKEN = "test-token"


@contextmanager
def stages_in(root: Path) -> Iterator[None]:
    """Run pipeline stages in `root` with its own MLflow store; cwd and URI restored."""
    old_cwd, old_uri = Path.cwd(), os.environ.get("MLFLOW_TRACKING_URI")
    os.chdir(root)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    try:
        yield
    finally:
        os.chdir(old_cwd)
        if old_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_uri


def build_served(root: Path) -> Path:
    with stages_in(root):
        strong = small_params(**{"ingest.synthetic.n_users": 800})
        weak = small_params(**{"ingest.synthetic.n_users": 800, "train.hist_gb.max_iter": 10,
                               "train.hist_gb.max_leaf_nodes": 2})  # fmt: skip
        ingest.run(strong)
        prepare.run(strong)
        for p in (strong, weak):
            train.run(p)
            evaluate.run(p)
            drift.run(p)
            promote.run(p)
    return root


@pytest.fixture(scope="session")
def served_dir(tmp_path_factory, worker_id) -> Path:
    """The served registry, built once per test run: under pytest-xdist the first process
    builds it in the run's shared temp folder (the others wait on a lock) and each process
    works on its own copy, so no test sees another process's changes. (Three processes
    built it three times, ~45 s of CPU each.) The copy's MLflow database names the build's
    run artifacts, which stay in place for the run."""
    if worker_id == "master":
        return build_served(tmp_path_factory.mktemp("served"))
    shared = tmp_path_factory.getbasetemp().parent / "served-build"
    with open(f"{shared}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / ".built").exists():
            shutil.rmtree(shared, ignore_errors=True)
            shared.mkdir()
            build_served(shared)
            (shared / ".built").touch()
    root = tmp_path_factory.mktemp("served")
    shutil.copytree(shared, root, symlinks=True, dirs_exist_ok=True)
    return root


@pytest.fixture
def in_served(served_dir, monkeypatch) -> Path:
    monkeypatch.chdir(served_dir)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return served_dir


@pytest.fixture
def client(in_served):
    from fastapi.testclient import TestClient

    from churn.serve import create_app

    with TestClient(create_app(settings())) as c:
        yield c


def settings(**overrides) -> Settings:
    return Settings(admin_token=TOKEN, **overrides)
