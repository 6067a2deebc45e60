"""Serving benchmark, one run: a constant endpoint (the floor), `churn serve` with each
model runtime, `mlflow models serve` and Seldon's MLServer on the same champion, plus
fairness under batches, 1 vs 2 workers, cold starts and the runtimes in process.
Run from the repo root after `dvc repro`:

    python benchmarks/serving [--seconds 8] [--soak-seconds 30]

Each server runs alone with one worker on 127.0.0.1; load comes from `wrk` (Debian
package, one thread) at concurrency 1, 8 and 64. MLServer runs from its own venv
(.venv-mlserver, created from benchmarks/serving/mlserver-requirements.txt: its FastAPI
pins clash with ours) on a joblib copy of the champion made here from the verified skops
file. Results go to benchmarks/results/serving.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
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
HERE = Path(__file__).resolve().parent
MLSERVER_VENV = ROOT / ".venv-mlserver"


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


def wrk_command(url: str, body: dict, connections: int, seconds: int) -> tuple[list[str], Path]:
    script = Path(tempfile.mktemp(suffix=".lua"))
    payload = json.dumps(body).replace("\\", "\\\\").replace('"', '\\"')
    script.write_text(f'wrk.method = "POST"\nwrk.body = "{payload}"\n'
                      'wrk.headers["Content-Type"] = "application/json"\n')  # fmt: skip
    # one wrk thread: it keeps up with 64 connections here, and a second one took CPU
    # from the one-worker server it measured
    return ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s",
            "-s", str(script), url], script  # fmt: skip


def parse_wrk(out: str, connections: int) -> dict:
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
        "timeouts": int(socket_errors.group(4)) if socket_errors else 0,
    }


def cpu_ticks() -> tuple[int, int]:
    """(steal, all) jiffies of the machine so far, from /proc/stat: a virtual machine's
    host can take CPU away (seen here: 100 % steal for seconds)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return fields[7], sum(fields[:8])


def steal_pct(before: tuple[int, int], after: tuple[int, int]) -> float:
    return round(100 * (after[0] - before[0]) / max(1, after[1] - before[1]), 1)


def wrk(url: str, body: dict, connections: int, seconds: int) -> dict:
    command, script = wrk_command(url, body, connections, seconds)
    ticks = cpu_ticks()
    done = subprocess.run(command, capture_output=True, text=True)
    stolen = steal_pct(ticks, cpu_ticks())
    script.unlink()
    if done.returncode != 0:
        sys.exit(
            f"wrk failed ({done.returncode}) on {url}: {done.stdout[-500:]} {done.stderr[-500:]}"
        )
    return {**parse_wrk(done.stdout, connections), "cpu_steal_pct": stolen}


def cpu_seconds(proc: subprocess.Popen) -> float:
    parent = psutil.Process(proc.pid)
    total = 0.0
    for p in [parent, *parent.children(recursive=True)]:
        t = p.cpu_times()
        total += t.user + t.system
    return total


def accounted(proc: subprocess.Popen, url: str, body: dict, connections: int, seconds: int) -> dict:
    """A wrk run with the CPU the server and wrk used (cores busy over the run)."""
    server_before = cpu_seconds(proc)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = wrk(url, body, connections, seconds)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cores = (cpu_seconds(proc) - server_before) / seconds
    wrk_cores = (after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime) / seconds
    return {**run, "server_cores": round(server_cores, 2), "wrk_cores": round(wrk_cores, 2),
            "rps_per_server_core": round(run["rps"] / server_cores)}  # fmt: skip


def mixed(url: str, single: dict, batch: dict, seconds: int) -> dict:
    """Single requests at c=64 while 8 connections keep posting 1 000-row batches."""
    command, script = wrk_command(f"{url}/predict/batch", batch, 8, seconds + 2)
    batches = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    singles = wrk(f"{url}/predict", single, 64, seconds)
    out, _ = batches.communicate()
    script.unlink()
    return {"singles": singles, "batches": parse_wrk(out, 8)}


def per_call_us(fn, n: int) -> float:
    timings = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        timings.append(time.perf_counter() - t)
    return round(statistics.median(timings) * 1e6, 1)


def runtimes_in_process(compiled, rows: np.ndarray, reference: np.ndarray) -> dict:
    """Each runtime on preprocessed rows: 1-row µs, 1 000-row rows/s, max |diff|."""
    from churn import runtimes

    out = {}
    for name in ("sklearn", "numpy", "treelite", "onnx"):
        try:
            t = time.perf_counter()
            fn = runtimes.scorer(compiled, name)
            build_s = time.perf_counter() - t
        except runtimes.Unsupported as exc:
            out[name] = {"unsupported": str(exc)}
            continue
        t = time.perf_counter()
        for _ in range(20):
            fn(rows[:BATCH])
        out[name] = {
            "one_row_us": per_call_us(lambda i, fn=fn: fn(rows[i : i + 1]), 2000),
            "rows_per_s_1000": round(20 * BATCH / (time.perf_counter() - t)),
            "max_abs_diff": float(np.abs(fn(rows) - reference).max()),
            "build_s": round(build_s, 3),
        }
    return out


def in_process(champion: dict, online: pd.DataFrame, features: list[str]) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from sklearn.ensemble import HistGradientBoostingClassifier

    from churn import modelfile
    from churn.fastpath import compile_pipeline

    pipeline = modelfile.load(ROOT / champion["artifact_path"])
    compiled = compile_pipeline(pipeline, online.head(500))
    rows = compiled.transform(*compiled.encode(online))
    frame = online[features]
    reference = pipeline.predict_proba(frame)[:, 1]
    record = online[features].iloc[0].to_dict()
    record = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in record.items()}
    result = {
        "pipeline_predict_proba_1_row_us": per_call_us(lambda i: pipeline.predict_proba(frame.iloc[i : i + 1]), 300),
        "one_record_pandas_encode_us": per_call_us(lambda i: compiled.encode(pd.DataFrame([record])), 1000),
        "one_record_numpy_encode_us": per_call_us(lambda i: compiled.encode_record(record), 1000),
        "preprocess_1_row_us": per_call_us(lambda i: compiled.transform(*compiled.encode_record(record)), 1000),
        "champion": runtimes_in_process(compiled, rows, reference),
    }  # fmt: skip
    # the tree runtimes on a tree model: histogram boosting with the pipeline's settings,
    # fitted on the same preprocessed rows against the champion's own decisions
    hgb = HistGradientBoostingClassifier(max_iter=100, max_leaf_nodes=6, learning_rate=0.05,
                                         min_samples_leaf=40, random_state=0)  # fmt: skip
    hgb.fit(rows, reference > np.median(reference))
    from dataclasses import replace

    trees = replace(compiled, estimator=hgb)
    result["hist_gb_same_rows"] = runtimes_in_process(trees, rows, hgb.predict_proba(rows)[:, 1])
    return result


def mlserver_python() -> Path:
    python = MLSERVER_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {MLSERVER_VENV} (MLServer's own pins) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r",
                        str(HERE / "mlserver-requirements.txt")], check=True)  # fmt: skip
    return python


def mlserver_folder(champion: dict, port: int) -> Path:
    """A model folder MLServer's sklearn runtime loads: a joblib dump of the champion made
    here from the sha256-verified skops file (our bytes, never a file from a PR)."""
    import joblib

    from churn import modelfile

    folder = Path(tempfile.mkdtemp(prefix="mlserver-"))
    (folder / "churn").mkdir()
    joblib.dump(modelfile.load(ROOT / champion["artifact_path"]), folder / "churn/model.joblib")
    (folder / "churn/model-settings.json").write_text(json.dumps(
        {"name": "churn", "implementation": "mlserver_sklearn.SKLearnModel",
         "parameters": {"uri": "./model.joblib"}}))  # fmt: skip
    # parallel_workers 0: inference in the one server process, like the others here
    (folder / "settings.json").write_text(json.dumps(
        {"host": "127.0.0.1", "http_port": port, "grpc_port": free_port(),
         "metrics_port": free_port(), "parallel_workers": 0}))  # fmt: skip
    return folder


def v2_request(contract: dict, rows: list[dict]) -> dict:
    """The Open Inference (V2) protocol body for feature records, pandas codec."""
    inputs = []
    for f in contract["features"]:
        numeric = f["kind"] == "numeric"
        inputs.append({"name": f["name"], "shape": [len(rows)],
                       "datatype": "FP64" if numeric else "BYTES",
                       "data": [float(r[f["name"]]) if numeric else str(r[f["name"]])
                                for r in rows]})  # fmt: skip
    return {"parameters": {"content_type": "pd"}, "inputs": inputs,
            "outputs": [{"name": "predict_proba"}]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--soak-seconds", type=int, default=30)
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
    # one complete record (no missing values: the V2 protocol has no null for FP64), the
    # same for every server; batches are the first 1 000 complete records
    complete = online[features].dropna()
    records = [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
               for row in complete.iloc[:BATCH].to_dict("records")]  # fmt: skip
    record = records[0]
    secs = args.seconds
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1",
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI",
                                                 f"sqlite:///{ROOT / 'mlflow/mlflow.db'}")}  # fmt: skip
    results: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores",
                     "model": champion["model"], "version": champion["version"],
                     "seconds_per_run": secs, "cold_start_s": {}, "runs": []}  # fmt: skip
    mls_python = mlserver_python()
    run_ticks = cpu_ticks()
    print("in-process ...", flush=True)
    results["in_process"] = in_process(champion, online, features)
    print(json.dumps(results["in_process"]), flush=True)

    def sweep(server: str, runtime: str | None, url: str, shapes: list) -> None:
        for name, path, body in shapes:
            for c in CONCURRENCY:
                print(f"{server} {runtime or ''} {name} c={c} ...", flush=True)
                results["runs"].append({"server": server, "runtime": runtime, "request": name,
                                        **wrk(url + path, body, c, secs)})  # fmt: skip

    single_id = {"user_id": ids[0]}
    ours = [("single_user_id", "/predict", single_id),
            ("single_features", "/predict", {"features": record}),
            ("batch_1000_ids", "/predict/batch", {"user_ids": ids[:BATCH]})]  # fmt: skip

    # the floor: the same stack answering a constant
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc, cold = start([str(BIN / "uvicorn"), "floor:app", "--app-dir", str(HERE), "--port",
                        str(port), "--loop", "asyncio", "--no-access-log", "--log-level",
                        "warning"], (f"{url}/predict", single_id), env)  # fmt: skip
    results["cold_start_s"]["floor"] = round(cold, 3)
    sweep("floor", None, url, ours[:2])
    stop(proc)

    compiled = ROOT / "mlflow" / "models" / champion["sha256"] / "compiled.json"
    for runtime in ("auto", "sklearn", "onnx"):
        if runtime == "auto":
            # without compiled.json (a store from before it, or deleted): the Pipeline is
            # loaded and the file written
            compiled.unlink(missing_ok=True)
            port = free_port()
            proc, cold = start([str(BIN / "churn"), "serve", "--port", str(port)],
                               (f"http://127.0.0.1:{port}/predict", single_id), env)  # fmt: skip
            stop(proc)
            results["cold_start_s"]["churn_serve_auto_without_compiled_json"] = round(cold, 3)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc, cold = start([str(BIN / "churn"), "serve", "--port", str(port), "--log-level",
                            "warning"], (f"{url}/predict", single_id),
                           {**env, "CHURN_RUNTIME": runtime})  # fmt: skip
        adopted = httpx.get(f"{url}/model").json()["runtime"]
        results["cold_start_s"][f"churn_serve_{runtime}"] = round(cold, 3)
        results.setdefault("loaded_from", {})[runtime] = adopted["source"]
        adopted = adopted["name"]
        label = f"{runtime} ({adopted})" if runtime == "auto" else adopted
        sweep("churn_serve", label, url, ours)
        if runtime == "auto":
            print("mixed: singles with 8 batch connections ...", flush=True)
            results["mixed"] = mixed(url, single_id, {"user_ids": ids[:BATCH]}, secs)
            print("soak ...", flush=True)
            rss_before = rss_mb(proc)
            soak = wrk(f"{url}/predict", single_id, 64, args.soak_seconds)
            rss_after = rss_mb(proc)
            results["soak_c64"] = {**soak, "rss_before_mb": round(rss_before, 1),
                                   "rss_after_mb": round(rss_after, 1),
                                   "rss_growth_pct": round(100 * (rss_after / rss_before - 1), 2)}  # fmt: skip
        stop(proc)

    results["workers"] = {}
    for workers in (1, 2):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc, _ = start([str(BIN / "churn"), "serve", "--port", str(port), "--workers",
                         str(workers), "--log-level", "warning"], (f"{url}/predict", single_id),
                        env)  # fmt: skip
        time.sleep(2)  # every worker up, not only the first to answer
        print(f"workers {workers} ...", flush=True)
        results["workers"][str(workers)] = accounted(proc, f"{url}/predict", single_id, 64, secs)
        stop(proc)

    port = free_port()
    url = f"http://127.0.0.1:{port}/invocations"
    one_row = {"dataframe_split": {"columns": features, "data": [list(record.values())]}}
    batch_rows = {"dataframe_split": {"columns": features,
                                      "data": [list(r.values()) for r in records]}}  # fmt: skip
    uri = f"models:/{champion['model_name']}@champion"
    proc, cold = start([str(BIN / "mlflow"), "models", "serve", "-m", uri, "--env-manager",
                        "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                       (url, one_row), env)  # fmt: skip
    results["cold_start_s"]["mlflow_models_serve"] = round(cold, 3)
    sweep("mlflow_models_serve", None, url, [("single_features", "", one_row),
                                             ("batch_1000_rows", "", batch_rows)])  # fmt: skip
    stop(proc)

    port = free_port()
    folder = mlserver_folder(champion, port)
    url = f"http://127.0.0.1:{port}/v2/models/churn/infer"
    mls_env = {**env, "PATH": f"{mls_python.parent}{os.pathsep}{os.environ['PATH']}"}
    proc, cold = start([str(mls_python.parent / "mlserver"), "start", str(folder)],
                       (url, v2_request(contract, [record])), mls_env)  # fmt: skip
    results["cold_start_s"]["mlserver"] = round(cold, 3)
    sweep("mlserver", None, url, [("single_features", "", v2_request(contract, [record])),
                                  ("batch_1000_rows", "", v2_request(contract, records))])  # fmt: skip
    stop(proc)
    shutil.rmtree(folder, ignore_errors=True)

    results["cpu_steal_pct"] = steal_pct(run_ticks, cpu_ticks())
    results["summary"] = summary(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serving.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "serving.md").write_text(render(results))
    print(render(results))


def _run(r: dict, server: str, request: str, c: int, runtime: str | None = None) -> dict:
    return next(x for x in r["runs"] if x["server"] == server and x["request"] == request
                and x["connections"] == c and (runtime is None or x["runtime"] == runtime))  # fmt: skip


def summary(r: dict) -> dict:
    """The issue's targets as ratios (met or not is for the reader and the note)."""
    auto = next(x["runtime"] for x in r["runs"] if str(x["runtime"]).startswith("auto"))
    ours = lambda req, c: _run(r, "churn_serve", req, c, auto)  # noqa: E731
    alone = ours("single_user_id", 64)
    feats8 = ours("single_features", 8)["rps"]
    w1, w2 = r["workers"]["1"], r["workers"]["2"]
    cold = r["cold_start_s"]
    return {
        "c64_p99_over_p50_by_id": round(alone["p99_ms"] / alone["p50_ms"], 2),
        "c64_p99_over_p50_features": round(ours("single_features", 64)["p99_ms"]
                                           / ours("single_features", 64)["p50_ms"], 2),
        "c64_p99_over_p50_batch": round(ours("batch_1000_ids", 64)["p99_ms"]
                                        / ours("batch_1000_ids", 64)["p50_ms"], 2),
        "singles_p99_with_8_batches_over_p50_alone": round(
            r["mixed"]["singles"]["p99_ms"] / alone["p50_ms"], 2),
        "timeouts_anywhere": sum(x["timeouts"] for x in r["runs"]),
        "one_row_by_id_over_floor_ms": round(ours("single_user_id", 1)["p50_ms"]
                                            - _run(r, "floor", "single_user_id", 1)["p50_ms"], 3),
        "one_row_features_over_floor_ms": round(ours("single_features", 1)["p50_ms"]
                                               - _run(r, "floor", "single_features", 1)["p50_ms"], 3),
        "workers_2_over_1_rps": round(w2["rps"] / w1["rps"], 2),
        "workers_2_over_1_rps_per_server_core": round(w2["rps_per_server_core"]
                                                     / w1["rps_per_server_core"], 2),
        "features_c8_over_mlflow_serve": round(
            feats8 / _run(r, "mlflow_models_serve", "single_features", 8)["rps"], 1),
        "features_c8_over_mlserver": round(feats8 / _run(r, "mlserver", "single_features", 8)["rps"], 1),
        "cold_start_over_mlflow_serve": round(cold["churn_serve_auto"] / cold["mlflow_models_serve"], 3),
        "start_without_compiled_json_over_mlflow_serve": round(
            cold["churn_serve_auto_without_compiled_json"] / cold["mlflow_models_serve"], 3),
    }  # fmt: skip


def table(header: list[str], rows: list[list]) -> list[str]:
    """A markdown table's lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]


def render(r: dict) -> str:
    lines = ["# Serving benchmark", "",
             f"{r['machine']}; champion {r['model']} version {r['version']}; one worker each "
             f"unless stated; wrk (one thread) {r['seconds_per_run']} s per run on 127.0.0.1. "
             "Generated by `python benchmarks/serving` (one run). CPU steal by the VM's host "
             f"over the run: {r['cpu_steal_pct']} % (per run in the last column).", "",
             "## Against the targets", ""]  # fmt: skip
    lines += [f"- {k}: **{v}**" for k, v in r["summary"].items()]
    lines += ["", "## Cold start to the first 200 (s)", ""]
    lines += [f"- {k}: {v}" for k, v in r["cold_start_s"].items()]
    lines += ["", "churn serve's model came from: " + ", ".join(
        f"{k}: {v}" for k, v in r.get("loaded_from", {}).items()) + " (compiled.json: the "
        "arrays of a linear model, written by promote and by a start that lacks it; pipeline: "
        "the skops file, sklearn imported)"]  # fmt: skip
    lines += ["", "## Load", ""]
    lines += table(["server", "runtime", "request", "concurrency", "req/s", "p50 ms", "p99 ms",
                    "errors", "steal %"],
                   [[x["server"], x["runtime"] or "—", x["request"], x["connections"],
                     f"{x['rps']:.0f}", x["p50_ms"], x["p99_ms"], x["errors"], x["cpu_steal_pct"]]
                    for x in r["runs"]])  # fmt: skip
    m = r["mixed"]
    lines += ["", "## Singles with batches running (churn serve, auto runtime)", "",
              f"Single by id at c=64 while 8 connections post 1 000-id batches: {m['singles']['rps']:.0f} "
              f"req/s, p50 {m['singles']['p50_ms']} ms, p99 {m['singles']['p99_ms']} ms, "
              f"{m['singles']['errors']} errors; the batches {m['batches']['rps']:.0f} req/s, "
              f"p50 {m['batches']['p50_ms']} ms, p99 {m['batches']['p99_ms']} ms.", "",
              "## Workers (single by id, c=64; CPU from /proc: cores busy over the run)", ""]  # fmt: skip
    lines += table(["workers", "req/s", "p50 ms", "p99 ms", "server cores", "wrk cores",
                    "req/s per server core"],
                   [[w, f"{x['rps']:.0f}", x["p50_ms"], x["p99_ms"], x["server_cores"],
                     x["wrk_cores"], x["rps_per_server_core"]]
                    for w, x in r["workers"].items()])  # fmt: skip
    ip = r["in_process"]
    lines += ["", "## Runtimes in process (preprocessed rows; max |diff| against the Pipeline)", "",
              f"Pipeline.predict_proba, 1 row: {ip['pipeline_predict_proba_1_row_us']} µs; one "
              f"feature record encoded with pandas {ip['one_record_pandas_encode_us']} µs, "
              f"without {ip['one_record_numpy_encode_us']} µs; preprocessing of one record "
              f"{ip['preprocess_1_row_us']} µs.", "",
              "| model | runtime | 1 row µs | rows/s (1 000-row calls) | max abs diff | build s |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for model in ("champion", "hist_gb_same_rows"):
        for name, x in ip[model].items():
            if "unsupported" in x:
                lines.append(f"| {model} | {name} | unsupported: {x['unsupported'][:90]} | | | |")
            else:
                lines.append(f"| {model} | {name} | {x['one_row_us']} | {x['rows_per_s_1000']} | "
                             f"{x['max_abs_diff']:.3g} | {x['build_s']} |")  # fmt: skip
    s = r["soak_c64"]
    lines += ["", f"Soak, churn serve, single user id, c=64, {s['requests']} requests: "
              f"{s['rps']:.0f} req/s, {s['errors']} errors, RSS {s['rss_before_mb']} → "
              f"{s['rss_after_mb']} MB ({s['rss_growth_pct']} %)."]  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
