"""Online store benchmark: a replica holding the online table in memory (file store) vs
one looking users up in PostgreSQL (serve.online_store: postgres), at 10 000 and
1 000 000 users. Run from the repo root after `dvc repro`:

    python benchmarks/online [--users 10000 1000000] [--requests 3000]

Starts its own PostgreSQL (+ MLflow server) with `churn team up` in a temporary folder.
Per size: the online table is the newest snapshot's rows repeated under new ids; it is
published with `churn publish` (COPY, timed), then one `churn serve` per store (one
worker, the repo's champion) answers POST /predict by id for uniformly random known ids,
the two servers measured in alternating rounds by one sequential client (latency = the
client's round trip on 127.0.0.1). RSS is the server's after its requests. Results go to
benchmarks/results/online.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
BIN = Path(sys.executable).parent
ONLINE = ROOT / "data" / "prepared" / "online_features.parquet"
sys.path.insert(0, str(ROOT / "benchmarks"))
from serving.__main__ import free_port, start, stop  # noqa: E402  (one server harness)


def base_env() -> dict[str, str]:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the repo's own store: the champion is served from it
    return env


def serve(extra: dict[str, str]) -> tuple[subprocess.Popen, str, float]:
    url = f"http://127.0.0.1:{free_port()}"
    command = [str(BIN / "churn"), "serve", "--port", url.rsplit(":", 1)[1]]
    proc, ready_s = start(command, (f"{url}/predict", {"user_id": "u00000000"}),
                          {**base_env(), **extra})  # fmt: skip
    return proc, url, ready_s


def rss_mb(proc: subprocess.Popen) -> float:
    return round(psutil.Process(proc.pid).memory_info().rss / 2**20, 1)


def latencies(client: httpx.Client, url: str, ids: list[str]) -> list[float]:
    out = []
    for uid in ids:
        started = time.perf_counter()
        answer = client.post(f"{url}/predict", json={"user_id": uid})
        out.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200:
            sys.exit(f"{url}: {answer.status_code} {answer.text[:200]}")
    return out


def table_of(users: int, folder: Path) -> Path:
    base = pd.read_parquet(ONLINE)
    big = pd.concat([base] * (users // len(base) + 1), ignore_index=True).iloc[:users].copy()
    big["user_id"] = [f"u{i:08d}" for i in range(users)]
    path = folder / f"online-{users}.parquet"
    big.to_parquet(path, index=False)
    return path


def one_size(users: int, requests: int, folder: Path, dsn: str) -> dict:
    path = table_of(users, folder)
    started = time.perf_counter()
    subprocess.run([str(BIN / "churn"), "publish", "--features", str(path)], cwd=ROOT,
                   env={**base_env(), "CHURN_ONLINE_DSN": dsn}, check=True,
                   capture_output=True)  # fmt: skip
    publish_s = time.perf_counter() - started
    stores = {
        "file": {"CHURN_ONLINE_STORE": "file", "CHURN_FEATURES": str(path)},
        "postgres": {"CHURN_ONLINE_STORE": "postgres", "CHURN_ONLINE_DSN": dsn},
    }
    servers = {name: serve(extra) for name, extra in stores.items()}
    rng = np.random.default_rng(users)
    ids = [f"u{i:08d}" for i in rng.integers(0, users, requests)]
    timings: dict[str, list[float]] = {name: [] for name in stores}
    try:
        with httpx.Client(timeout=30) as client:
            for _, url, _ in servers.values():  # warm-up: imports, first reasons
                latencies(client, url, ids[:50])
            rounds = 6
            for r in range(rounds):  # alternate: both stores see the same machine moments
                chunk = ids[r * len(ids) // rounds : (r + 1) * len(ids) // rounds]
                order = list(servers) if r % 2 == 0 else list(reversed(servers))
                for name in order:
                    timings[name] += latencies(client, servers[name][1], chunk)
        out = {"users": users, "publish_s": round(publish_s, 2), "requests": len(ids)}
        for name, (proc, url, ready_s) in servers.items():
            t = sorted(timings[name])
            model = httpx.get(f"{url}/model", timeout=30).json()
            assert model["n_online_users"] == users, model["online_store"]
            out[name] = {
                "ready_s": round(ready_s, 2),
                "rss_mb": rss_mb(proc),
                "p50_ms": round(statistics.median(t), 3),
                "p95_ms": round(t[int(0.95 * len(t))], 3),
                "p99_ms": round(t[int(0.99 * len(t))], 3),
            }
        out["p50_difference_ms"] = round(out["postgres"]["p50_ms"] - out["file"]["p50_ms"], 3)
        return out
    finally:
        for proc, _, _ in servers.values():
            stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    if not ONLINE.exists():
        sys.exit(f"{ONLINE}: absent; run `dvc repro` first")
    folder = Path(tempfile.mkdtemp(prefix="churn-online-bench-"))
    team_dir = folder / ".team"
    up = subprocess.run([str(BIN / "churn"), "team", "up", "--dir", str(team_dir), "--port",
                         str(free_port()), "--pg-port", str(free_port())], cwd=ROOT,
                        env=base_env(), capture_output=True, text=True, check=True)  # fmt: skip
    dsn = next(line.split("=", 1)[1] for line in up.stdout.splitlines()
               if line.startswith("export CHURN_ONLINE_DSN="))  # fmt: skip
    try:
        sizes = []
        for users in args.users:
            print(f"{users} users ...", file=sys.stderr, flush=True)
            sizes.append(one_size(users, args.requests, folder, dsn))
            print(json.dumps(sizes[-1]), file=sys.stderr, flush=True)
    finally:
        subprocess.run([str(BIN / "churn"), "team", "down", "--dir", str(team_dir)],
                       env=base_env(), capture_output=True)  # fmt: skip
        state = team_dir / "team.json"
        if state.exists():
            pg_data = Path(json.loads(state.read_text())["pg_data"])
            if pg_data.is_relative_to("/tmp") and not pg_data.is_relative_to(folder):
                shutil.rmtree(pg_data.parent, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "cache_rows": int(os.environ.get("CHURN_ONLINE_CACHE", "10000")),
        "sizes": sizes,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "online.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "online.md").write_text(report(result))
    print(report(result))


def report(result: dict) -> str:
    lines = [
        "# Online store: in memory (file) vs PostgreSQL look-ups",
        "",
        f"`python benchmarks/online` on {result['machine']}: one `churn serve` worker per "
        "store, the repo's champion, POST /predict by id for uniformly random known ids "
        f"(one sequential client, alternating rounds; PostgreSQL replica's LRU "
        f"{result['cache_rows']} rows). RSS after the requests.",
        "",
        "| users | store | ready (s) | RSS (MB) | p50 (ms) | p95 (ms) | p99 (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for size in result["sizes"]:
        for name in ("file", "postgres"):
            s = size[name]
            lines.append(f"| {size['users']:,} | {name} | {s['ready_s']} | {s['rss_mb']} | "
                         f"{s['p50_ms']} | {s['p95_ms']} | {s['p99_ms']} |")  # fmt: skip
    lines += ["", "| users | publish (COPY, key, rename) s | p50 postgres - file (ms) |",
              "|---|---|---|"]  # fmt: skip
    lines += [f"| {s['users']:,} | {s['publish_s']} | {s['p50_difference_ms']} |"
              for s in result["sizes"]]  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
