"""Serving benchmark: this app vs `mlflow models serve` on the same champion, plus
in-process predict_proba. Run from the repo root after `dvc repro`:

    python benchmarks/serving [--seconds 20] [--soak-seconds 60]

Each server runs alone with one worker on 127.0.0.1; load comes from `wrk` (Debian
package) at concurrency 1, 8 and 64. Results go to benchmarks/results/serving.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
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
CONCURRENCY = [1, 8, 64]
BATCH = 1000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], probe: tuple[str, dict], env: dict) -> tuple[subprocess.Popen, float]:
    """Start a server; return it and the seconds from spawn to the first 200 on `probe`."""
    url, body = probe
    log = open(tempfile.mktemp(prefix="serve-", suffix=".log"), "w")  # noqa: SIM115
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)  # fmt: skip
    while True:
        try:
            if httpx.post(url, json=body, timeout=5).status_code == 200:
                return proc, time.perf_counter() - started
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.perf_counter() - started > 180:
            sys.exit(f"server did not start: {command}; log {log.name}")
        time.sleep(0.02)


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def rss_mb(proc: subprocess.Popen) -> float:
    parent = psutil.Process(proc.pid)
    return sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)]) / 2**20


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, body: dict, connections: int, seconds: int) -> dict:
    script = Path(tempfile.mktemp(suffix=".lua"))
    payload = json.dumps(body).replace("\\", "\\\\").replace('"', '\\"')
    script.write_text(f'wrk.method = "POST"\nwrk.body = "{payload}"\n'
                      'wrk.headers["Content-Type"] = "application/json"\n')  # fmt: skip
    threads = min(2, connections)
    done = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s",
                           "--latency", "--timeout", "10s", "-s", str(script), url],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        sys.exit(
            f"wrk failed ({done.returncode}) on {url}: {done.stdout[-500:]} {done.stderr[-500:]}"
        )
    out = done.stdout
    script.unlink()

    def latency(pct: str) -> float:
        value, unit = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return round(float(value) * _UNITS[unit], 3)

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    return {
        "connections": connections,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "errors": (int(non2xx.group(1)) if non2xx else 0)
        + (sum(map(int, socket_errors.groups())) if socket_errors else 0),
    }


def in_process(champion: dict, online: pd.DataFrame, features: list[str]) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from churn import modelfile
    from churn.fastpath import compile_pipeline

    pipeline = modelfile.load(ROOT / champion["artifact_path"])
    compiled = compile_pipeline(pipeline, online.head(500))
    num, cat = compiled.encode(online)
    transformed = compiled.transform(num, cat)
    frame = online[features]

    def per_call_ms(fn, n: int) -> float:
        timings = []
        for i in range(n):
            t = time.perf_counter()
            fn(i)
            timings.append(time.perf_counter() - t)
        return round(statistics.median(timings) * 1000, 4)

    batch = frame.iloc[:BATCH]
    t = time.perf_counter()
    for _ in range(20):
        pipeline.predict_proba(batch)
    pipeline_rows_s = 20 * BATCH / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(20):
        compiled.predict_transformed(transformed[:BATCH])
    estimator_rows_s = 20 * BATCH / (time.perf_counter() - t)
    # the calibration map in the fast path: the served (calibrated) estimator against the
    # model inside it, one row; and the fast path's scores against the Pipeline's
    final = pipeline.named_steps["model"]
    calibration = {}
    if hasattr(final, "calibrated_classifiers_"):
        inner = final.calibrated_classifiers_[0].estimator
        calibration = {
            "sklearn_calibrated_estimator_1_row_ms": per_call_ms(
                lambda i: final.predict_proba(transformed[i : i + 1]), 2000),
            "uncalibrated_estimator_1_row_ms": per_call_ms(
                lambda i: inner.predict_proba(transformed[i : i + 1]), 2000),
        }  # fmt: skip
    exact = np.abs(compiled.predict_encoded(num, cat) - pipeline.predict_proba(frame)[:, 1]).max()
    return {
        **calibration,
        "fast_path_max_abs_diff_vs_pipeline": float(exact),
        "pipeline_predict_proba_1_row_ms": per_call_ms(lambda i: pipeline.predict_proba(frame.iloc[i : i + 1]), 300),
        "estimator_numpy_1_row_ms": per_call_ms(lambda i: compiled.predict_transformed(transformed[i : i + 1]), 2000),
        "pipeline_rows_per_s_batch_1000": round(pipeline_rows_s),
        "estimator_rows_per_s_batch_1000": round(estimator_rows_s),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--soak-seconds", type=int, default=60)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("benchmark: wrk not found (apt-get install wrk)")
    champion = json.loads((ROOT / "registry/streamflow-churn/champion.json").read_text())
    contract = json.loads((ROOT / champion["contract_path"]).read_text())
    features = [f["name"] for f in contract["features"]]
    online = pd.read_parquet(
        ROOT / "mlflow/online/registry-streamflow-churn/online_features.parquet"
    )
    ids = online["user_id"].tolist()
    record = {k: (None if isinstance(v, float) and np.isnan(v) else v)
              for k, v in online[features].iloc[0].to_dict().items()}  # fmt: skip
    rows = (
        online[features]
        .iloc[:BATCH]
        .astype(object)
        .where(online[features].iloc[:BATCH].notna(), None)
    )
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1",
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI",
                                                 f"sqlite:///{ROOT / 'mlflow/mlflow.db'}")}  # fmt: skip
    results: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores",
                     "model": champion["model"], "version": champion["version"],
                     "seconds_per_run": args.seconds}  # fmt: skip
    print("in-process ...", flush=True)
    results["in_process"] = in_process(champion, online, features)
    print(json.dumps(results["in_process"]), flush=True)

    port = free_port()
    ours = f"http://127.0.0.1:{port}"
    single_id = {"user_id": ids[0]}
    proc, cold = start([str(BIN / "churn"), "serve", "--port", str(port), "--log-level", "warning"],
                       (f"{ours}/predict", single_id), env)  # fmt: skip
    results["churn_serve"] = {"cold_start_s": round(cold, 3), "runs": {}}
    for name, path, body in [("single_user_id", "/predict", single_id),
                             ("single_features", "/predict", {"features": record}),
                             ("batch_1000_ids", "/predict/batch", {"user_ids": ids[:BATCH]})]:  # fmt: skip
        for c in CONCURRENCY:
            print(f"churn serve {name} c={c} ...", flush=True)
            results["churn_serve"]["runs"][f"{name}@{c}"] = wrk(ours + path, body, c, args.seconds)
    rss_before = rss_mb(proc)
    soak = wrk(ours + "/predict", single_id, 64, args.soak_seconds)
    rss_after = rss_mb(proc)
    results["churn_serve"]["soak_c64"] = {**soak, "rss_before_mb": round(rss_before, 1),
                                          "rss_after_mb": round(rss_after, 1),
                                          "rss_growth_pct": round(100 * (rss_after / rss_before - 1), 2)}  # fmt: skip
    stop(proc)

    port = free_port()
    theirs = f"http://127.0.0.1:{port}/invocations"
    one_row = {"dataframe_split": {"columns": features, "data": [list(record.values())]}}
    batch_rows = {"dataframe_split": {"columns": features, "data": rows.values.tolist()}}
    uri = f"models:/{champion['model_name']}@champion"
    proc, cold = start([str(BIN / "mlflow"), "models", "serve", "-m", uri, "--env-manager",
                        "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                       (theirs, one_row), env)  # fmt: skip
    results["mlflow_models_serve"] = {"cold_start_s": round(cold, 3), "runs": {}}
    for name, body in [("single_features", one_row), ("batch_1000_rows", batch_rows)]:
        for c in CONCURRENCY:
            print(f"mlflow models serve {name} c={c} ...", flush=True)
            results["mlflow_models_serve"]["runs"][f"{name}@{c}"] = wrk(
                theirs, body, c, args.seconds
            )
    stop(proc)

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serving.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "serving.md").write_text(render(results))
    print(render(results))


def render(r: dict) -> str:
    lines = ["# Serving benchmark", "",
             f"{r['machine']}; champion {r['model']} version {r['version']}; one worker each; "
             f"wrk {r['seconds_per_run']} s per run on 127.0.0.1. Generated by `python benchmarks/serving`.",
             "", "In process: " + ", ".join(f"{k} {v}" for k, v in r["in_process"].items()), "",
             f"Cold start to first 200: churn serve {r['churn_serve']['cold_start_s']} s, "
             f"mlflow models serve {r['mlflow_models_serve']['cold_start_s']} s.", "",
             "| server | request | concurrency | req/s | p50 ms | p99 ms | errors |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for server in ("churn_serve", "mlflow_models_serve"):
        for key, run in r[server]["runs"].items():
            name, c = key.split("@")
            lines.append(f"| {server} | {name} | {c} | {run['rps']:.0f} | {run['p50_ms']} | "
                         f"{run['p99_ms']} | {run['errors']} |")  # fmt: skip
    s = r["churn_serve"]["soak_c64"]
    lines += ["", f"Soak, churn serve, single user id, c=64 for the soak run: {s['rps']:.0f} req/s, "
              f"{s['errors']} errors, RSS {s['rss_before_mb']} → {s['rss_after_mb']} MB "
              f"({s['rss_growth_pct']} %)."]  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
