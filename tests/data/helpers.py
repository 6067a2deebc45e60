"""Run the real `churn` CLI in a work dir and read its one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml


def write_params(work: Path, **ingest: object) -> Path:
    params = {"ingest": {"max_null_rate": 0.05, **ingest}}
    top = {k: params["ingest"].pop(k) for k in ("as_of",) if k in params["ingest"]}
    path = work / "params.yaml"
    path.write_text(yaml.safe_dump({**top, **params}))
    return path


def churn(work: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.run(
        [sys.executable, "-m", "churn", *args],
        cwd=work,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def error_line(result: subprocess.CompletedProcess) -> str:
    """The failure message: exactly one non-empty line that starts with 'churn <cmd>: error'."""
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]
