"""Run real processes (git, dvc, churn) in a temp copy of this repo."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from tests.conftest import REPO_ROOT

BIN = Path(sys.executable).parent
ALL = ["ingest", "prepare", "decide", "train", "evaluate", "drift", "promote", "score"]


def env() -> dict[str, str]:
    """The test process's environment for children: venv first, no tracking URI override."""
    out = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    out.update(
        PATH=f"{BIN}{os.pathsep}{out.get('PATH', '')}",
        MLFLOW_DISABLE_TELEMETRY="true",
        GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com",
    )  # fmt: skip
    return out


def sh(
    repo: Path, *args: str, check: bool = True, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=repo, capture_output=True, text=True,
                            env={**env(), **(extra_env or {})}, timeout=600)  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def dvc(
    repo: Path, *args: str, check: bool = True, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return sh(repo, str(BIN / "dvc"), *args, check=check, extra_env=extra_env)


def ran_stages(result: subprocess.CompletedProcess) -> list[str]:
    text = result.stdout + result.stderr
    return [line.split("'")[1] for line in text.splitlines() if line.startswith("Running stage")]


def set_param(repo: Path, dotted: str, value: object) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    node = params
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def make_repo(repo: Path, n_users: int, n_months: int, model: str = "hist_gb") -> Path:
    """A git + DVC repo with this project's pipeline and code, on small synthetic data.

    `model` pins train.model: the promotion tests make a weaker or stronger candidate by
    changing train.hist_gb.*, which the shipped `auto` search might not pick."""
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(REPO_ROOT / name, repo / name)
    shutil.copytree(REPO_ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO_ROOT / "data" / "external", repo / "data" / "external")
    shutil.copytree(REPO_ROOT / "campaigns", repo / "campaigns")
    set_param(repo, "ingest.synthetic.n_users", n_users)
    set_param(repo, "ingest.synthetic.n_months", n_months)
    set_param(repo, "train.model", model)
    sh(repo, "git", "init", "-q")
    dvc(repo, "init", "-q")
    dvc(repo, "config", "core.analytics", "false")
    return repo


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ok(url: str, proc: subprocess.Popen, log_path: Path, timeout_s: float) -> None:
    """Poll `url` until it answers 200; fail with the server's log if it dies or times out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{url} never answered 200:\n{log_path.read_text()}")
        time.sleep(0.2)
