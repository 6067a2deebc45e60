"""Smoke-test the API as deployed: start `churn serve` on a free loopback port, wait
for /ready (with a timeout), POST /predict and check the answer against the contract
and the registry's champion.json
(CHURN_REGISTRY_DIR, default registry/; the lineage of promote.model_name). Exit 1 naming
what broke, with the server's log.

Run from the repo root with the venv on PATH, after `dvc repro`:
    python scripts/ci/smoke.py [--user-id SF-0000001] [--timeout 60] [--log ci-logs/serve.log]
Used by scripts/bootstrap, the CI workflow and the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

FIELDS = {"user_id", "churn_probability", "churn", "threshold", "model_version", "model_role",
          "as_of", "request_id"}  # fmt: skip


class SmokeError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, server: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SmokeError(f"churn serve exited with code {server.returncode} before /ready")
        try:
            answer = httpx.get(f"{url}/ready", timeout=2)
            if answer.status_code == 200:
                return
            last = f"{answer.status_code} {answer.text[:200]}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.2)
    raise SmokeError(f"/ready did not answer 200 within {timeout_s:g} s (last: {last})")


def served_lineage() -> Path:
    """The lineage folder `churn serve` reads here (CHURN_REGISTRY_DIR / model name)."""
    from churn.serve import Settings

    return Settings.from_env().registry_dir


def first_user_id() -> str:
    import pandas as pd

    from churn import registry

    path = registry.online_dir(served_lineage()) / "online_features.parquet"
    if not path.exists():
        raise SmokeError(f"{path}: not found; run `dvc repro` first")
    return str(pd.read_parquet(path, columns=["user_id"])["user_id"].iloc[0])


def check(url: str, user_id: str) -> dict:
    """The contract: one prediction, the champion's version, a 422 naming a bad field."""
    champion = json.loads((served_lineage() / "champion.json").read_text())
    answer = httpx.post(f"{url}/predict", json={"user_id": user_id}, timeout=10)
    if answer.status_code != 200:
        raise SmokeError(f"POST /predict answered {answer.status_code}: {answer.text[:300]}")
    body = answer.json()
    problems = []
    if set(body) != FIELDS:
        problems.append(f"fields {sorted(body)} != {sorted(FIELDS)}")
    p = body.get("churn_probability")
    if not isinstance(p, float) or not 0.0 <= p <= 1.0:
        problems.append(f"churn_probability {p!r} is not a probability")
    elif body.get("churn") != (p >= body.get("threshold", 2.0)):
        problems.append(f"churn {body.get('churn')} disagrees with {p} vs the threshold")
    if body.get("user_id") != user_id:
        problems.append(f"user_id {body.get('user_id')!r} != {user_id!r}")
    if str(body.get("model_version")) != str(champion["version"]):
        problems.append(f"model_version {body.get('model_version')} != champion.json "
                        f"{champion['version']}")  # fmt: skip
    model = httpx.get(f"{url}/model", timeout=10).json()
    if model.get("sha256") != champion["sha256"]:
        problems.append("GET /model sha256 differs from registry/champion.json")
    from churn import registry

    local = registry.local_lineage(champion["model_name"], champion)["run_id"]
    if model.get("run_id") != local:
        problems.append(
            f"GET /model run_id {model.get('run_id')} is not the run of this MLflow "
            f"store holding the champion ({local}, as `churn registry show` says)"
        )
    bad = httpx.post(f"{url}/predict", json={"user_id": ["not", "an", "id"]}, timeout=10)
    if bad.status_code != 422 or "user_id" not in bad.text:
        problems.append(f"a bad user_id got {bad.status_code}, not a 422 naming user_id")
    if problems:
        raise SmokeError("; ".join(problems))
    return body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--user-id", help="default: the first user of the online table")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for /ready")
    parser.add_argument("--log", type=Path, default=Path("ci-logs/serve.log"))
    args = parser.parse_args()
    args.log.parent.mkdir(parents=True, exist_ok=True)
    churn = shutil.which("churn") or str(Path(sys.executable).parent / "churn")
    url = f"http://127.0.0.1:{free_port()}"
    with open(args.log, "w") as log:
        server = subprocess.Popen(
            [churn, "serve", "--port", url.rsplit(":", 1)[1]], stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            wait_ready(url, server, args.timeout)
            body = check(url, args.user_id or first_user_id())
        except SmokeError as exc:
            print(f"smoke: FAILED: {exc}\n--- {args.log} ---", file=sys.stderr)
            print(args.log.read_text()[-4000:], file=sys.stderr)
            return 1
        finally:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=30)
    print(f'smoke: ok: POST {url}/predict {{"user_id": "{body["user_id"]}"}} ->')
    print(json.dumps(body, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
