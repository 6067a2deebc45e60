"""Pipeline benchmark: per-stage wall time and peak memory, full `dvc repro` from
scratch and no-op `dvc repro`, on synthetic data of several sizes.

    python benchmarks/pipeline --users 7043 100000 1000000 --months 2
    python benchmarks/pipeline --engine dask --workers 3 --memory-limit 3GB \
        --users 1000000 10000000 --months 2

Each size runs in a fresh temp git + DVC repo (a copy of dvc.yaml, params.yaml and
src/), with its own MLflow SQLite store, exactly as a fresh clone would. Results are
merged into benchmarks/results/pipeline.json and rendered to pipeline.md.

With --engine dask every stage that uses the engine (all but decide) starts a LocalCluster
of --workers single-threaded workers, each limited to --memory-limit; the source is the
synthetic data written beforehand as a data lake would hold it (each month's tables as
folders of parquet parts of --partition-rows rows, generated --lake-chunk-users users at a
time; not timed), and each stage's log line carries every worker's peak RSS. Results go to benchmarks/results/scale.{json,md}, with the
growth exponents between the two largest sizes and an estimate for 100 M users.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
BIN = Path(sys.executable).parent
STAGES = ["ingest", "prepare", "decide", "train", "evaluate", "drift", "promote", "score"]


def run(repo: Path, *args: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(
            f"benchmark: {' '.join(args)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    return elapsed


def write_lake(repo: Path, params: dict, partition_rows: int, chunk_users: int) -> dict:
    """The synthetic months as a lake: data/external/lake/<as_of>/<table>.parquet/part-*.
    Users are generated chunk_users at a time (one month of 30 M users would need ~22 GB
    in this process): chunk k is its own synthetic population (seed + k) whose ids are
    renumbered after the chunks before it. Returns the size of a month's tables in
    memory (pandas, deep; the sum over the chunks) and of the lake on disk."""
    sys.path.insert(0, str(ROOT / "src"))
    from churn import synthetic
    from churn.params import SyntheticParams
    from churn.schema import ID

    lake = repo / "data" / "external" / "lake"
    base = SyntheticParams(**params["ingest"]["synthetic"])
    width = len(str(base.n_users))
    month_mb: dict[str, float] = {}
    for k, offset in enumerate(range(0, base.n_users, chunk_users)):
        size = min(chunk_users, base.n_users - offset)
        chunk = base.model_copy(update={"n_users": size, "seed": base.seed + k})
        ids = np.array([f"SF-{i:0{width}d}" for i in range(offset + 1, offset + size + 1)],
                       dtype=object)  # fmt: skip
        for as_of, tables in synthetic.generate(chunk):
            for name, frame in tables.items():
                position = frame[ID].str.slice(3).astype("int64").to_numpy() - 1
                frame[ID] = ids[position]
                month_mb[as_of] = month_mb.get(as_of, 0.0) + frame.memory_usage(deep=True).sum()
                folder = lake / as_of / f"{name}.parquet"
                folder.mkdir(parents=True, exist_ok=True)
                for i, start in enumerate(range(0, len(frame), partition_rows)):
                    frame.iloc[start : start + partition_rows].to_parquet(
                        folder / f"part-{k:03d}-{i:05d}.parquet", index=False
                    )
            print(f"  lake: {as_of} users {offset + 1}..{offset + size} written", flush=True)
    disk = sum(p.stat().st_size for p in lake.rglob("*") if p.is_file()) / 2**20
    return {"month_in_memory_mb": round(max(month_mb.values()) / 2**20, 1),
            "lake_on_disk_mb": round(disk, 1)}  # fmt: skip


def make_repo(n_users: int, n_months: int, drift_from_month: int = 1, **params_set: str) -> Path:
    repo = Path(tempfile.mkdtemp(prefix=f"churn-bench-{n_users}-"))
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "data" / "external", repo / "data" / "external")
    shutil.copytree(ROOT / "campaigns", repo / "campaigns")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["ingest"]["synthetic"].update(
        n_users=n_users, n_months=n_months, drift_from_month=drift_from_month
    )
    for dotted, value in params_set.items():
        node = params
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return repo


def bench_env(stage_log: Path) -> dict[str, str]:
    """No tracking URI override, telemetry off, per-stage timings to stage_log."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(PATH=f"{BIN}{os.pathsep}{env['PATH']}", MLFLOW_DISABLE_TELEMETRY="true",
               CHURN_STAGE_LOG=str(stage_log), GIT_AUTHOR_NAME="bench",
               GIT_AUTHOR_EMAIL="bench@example.com", GIT_COMMITTER_NAME="bench",
               GIT_COMMITTER_EMAIL="bench@example.com")  # fmt: skip
    return env


def init_repo(repo: Path, env: dict[str, str]) -> None:
    run(repo, "git", "init", "-q", env=env)
    run(repo, str(BIN / "dvc"), "init", "-q", env=env)
    run(repo, str(BIN / "dvc"), "config", "core.analytics", "false", env=env)


def bench_size(n_users: int, n_months: int, noop_repeats: int, dask: dict | None = None) -> dict:
    settings = {}
    if dask:
        settings = {"engine": "dask", "dask.workers": dask["workers"],
                    "dask.memory_limit": dask["memory_limit"],
                    "dask.partition_rows": dask["partition_rows"], "ingest.source": "snapshots",
                    "ingest.path": "data/external/lake"}  # fmt: skip
    repo = make_repo(n_users, n_months, **settings)
    stage_log = repo / "stages.jsonl"
    env = bench_env(stage_log)
    try:
        init_repo(repo, env)
        lake = {}
        if dask:
            print(f"[{n_users} users x {n_months} months] writing the lake ...", flush=True)
            lake = write_lake(repo, yaml.safe_load((repo / "params.yaml").read_text()),
                              dask["partition_rows"], dask["lake_chunk_users"])  # fmt: skip
        print(f"[{n_users} users x {n_months} months] full dvc repro ...", flush=True)
        full = run(repo, str(BIN / "dvc"), "repro", env=env)
        stages = [json.loads(line) for line in stage_log.read_text().splitlines()]
        noop = [run(repo, str(BIN / "dvc"), "repro", env=env) for _ in range(noop_repeats)]
        metrics = json.loads((repo / "reports" / "metrics.json").read_text())
        raw_mb = sum(p.stat().st_size for p in (repo / "data" / "raw").rglob("*") if p.is_file())
    finally:
        shutil.rmtree(repo, ignore_errors=True)
    result = {
        "n_users": n_users,
        "n_months": n_months,
        "full_repro_s": round(full, 2),
        "noop_repro_s": round(statistics.median(noop), 3),
        "noop_repro_runs_s": [round(x, 3) for x in noop],
        "stages": {s["stage"]: {k: v for k, v in s.items() if k != "stage"} for s in stages},
        "peak_rss_mb": max(s["peak_rss_mb"] for s in stages),
        "raw_data_mb": round(raw_mb / 2**20, 1),
        "roc_auc": metrics["roc_auc"],
        **lake,
        **({"dask": dask} if dask else {}),
    }
    print(json.dumps(result, indent=2), flush=True)
    return result


def render(results: dict) -> str:
    lines = [
        "# Pipeline benchmark",
        "",
        f"Machine: {results['machine']}. Generated by `python benchmarks/pipeline`.",
        "Stage times are measured inside each `churn` command (imports included, interpreter",
        "start excluded); full/no-op repro are wall times of the `dvc repro` process.",
        "Runs before the score stage existed show — in its column; since then train fits",
        "a calibrated model and, with `train.model: auto`, a 6-candidate CV search.",
        "",
        "| users × months | full repro s | no-op repro s | " +
        " | ".join(f"{s} s / MB" for s in STAGES) + " | peak RSS MB | ROC AUC |",
        "|---|---|---|" + "---|" * len(STAGES) + "---|---|",
    ]  # fmt: skip
    for key in sorted(results["runs"], key=lambda k: results["runs"][k]["n_users"]):
        r = results["runs"][key]
        cells = [f"{r['stages'][s]['wall_s']:.1f} / {r['stages'][s]['peak_rss_mb']:.0f}"
                 if s in r["stages"] else "—" for s in STAGES]  # fmt: skip
        lines.append(
            f"| {r['n_users']:,} × {r['n_months']} | {r['full_repro_s']:.1f} | "
            f"{r['noop_repro_s']:.2f} | " + " | ".join(cells) +
            f" | {r['peak_rss_mb']:.0f} | {r['roc_auc']:.4f} |"
        )  # fmt: skip
    return "\n".join(lines + growth(results)) + "\n"


def growth(results: dict, small: str = "1000000x2", large: str = "10000000x2") -> list[str]:
    """Per stage, time and peak memory at two sizes and the growth exponent
    log(large / small) / log(users ratio): 1 is linear."""
    runs = results["runs"]
    if small not in runs or large not in runs:
        return []
    a, b = runs[small], runs[large]
    scale = math.log(b["n_users"] / a["n_users"])

    def exponent(x: float, y: float) -> str:
        return f"{math.log(y / x) / scale:.2f}"

    rows = [[stage, f"{a['stages'][stage]['wall_s']:.1f}", f"{b['stages'][stage]['wall_s']:.1f}",
             exponent(a["stages"][stage]["wall_s"], b["stages"][stage]["wall_s"]),
             f"{a['stages'][stage]['peak_rss_mb']:.0f}", f"{b['stages'][stage]['peak_rss_mb']:.0f}",
             exponent(a["stages"][stage]["peak_rss_mb"], b["stages"][stage]["peak_rss_mb"])]
            for stage in STAGES if stage in a["stages"] and stage in b["stages"]]  # fmt: skip
    rows.append(["full repro", f"{a['full_repro_s']:.1f}", f"{b['full_repro_s']:.1f}",
                 exponent(a["full_repro_s"], b["full_repro_s"]), f"{a['peak_rss_mb']:.0f}",
                 f"{b['peak_rss_mb']:.0f}", exponent(a["peak_rss_mb"], b["peak_rss_mb"])])  # fmt: skip
    header = ["stage", f"s at {a['n_users']:,}", f"s at {b['n_users']:,}", "time exponent",
              f"MB at {a['n_users']:,}", f"MB at {b['n_users']:,}", "memory exponent"]  # fmt: skip
    return ["", f"## Growth from {a['n_users']:,} to {b['n_users']:,} users ({a['n_months']} "
            "months)", "", "Exponent: log(large / small) / log(10); 1 is linear.", "",
            "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]  # fmt: skip


def render_scale(results: dict) -> str:
    """scale.md: per run the input against the workers' limit, per stage the time, the
    client's peak and the workers' peaks; growth between the two largest runs and an
    estimate for 100 M users from it."""
    runs = sorted(results["runs"].values(), key=lambda r: r["n_users"])
    lines = [
        "# Scale benchmark: engine dask",
        "",
        f"Machine: {results['machine']}. Generated by `python benchmarks/pipeline --engine "
        "dask`. Each run: a fresh repo whose source is the synthetic months written as a lake "
        "(each table a folder of parquet parts, written a chunk of users at a time; not "
        "timed), `dvc repro` with `engine: dask`: every stage but decide starts a "
        "LocalCluster of single-threaded workers with a memory limit each. Peaks are RSS "
        "high-water marks: the stage's own process (client) and each worker process.",
        "",
        "| users × months | workers × limit | parts of | one month in memory MB | lake on "
        "disk MB | full repro s | ROC AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        d = r["dask"]
        lines.append(f"| {r['n_users']:,} × {r['n_months']} | {d['workers']} × "
                     f"{d['memory_limit']} | {d['partition_rows']:,} rows | "
                     f"{r['month_in_memory_mb']:.0f} | {r['lake_on_disk_mb']:.0f} | "
                     f"{r['full_repro_s']:.1f} | {r['roc_auc']:.4f} |")  # fmt: skip
    for r in runs:
        lines += ["", f"## {r['n_users']:,} users × {r['n_months']} months", "",
                  "| stage | s | client peak MB | worker peaks MB |", "|---|---|---|---|"]  # fmt: skip
        for stage in STAGES:
            if stage in r["stages"]:
                st = r["stages"][stage]
                workers = ", ".join(f"{x:.0f}" for x in st.get("worker_peak_rss_mb", [])) or "—"
                lines.append(f"| {stage} | {st['wall_s']:.1f} | {st['peak_rss_mb']:.0f} | "
                             f"{workers} |")  # fmt: skip
    if len(runs) >= 2:
        lines += scale_growth(runs[-2], runs[-1])
    return "\n".join(lines) + "\n"


def scale_growth(a: dict, b: dict) -> list[str]:
    """Exponents log(b / a) / log(users ratio) per stage, and each stage extrapolated to
    100 M users with them."""
    ratio = math.log(b["n_users"] / a["n_users"])
    target = 100_000_000

    def exponent(x: float, y: float) -> float:
        return math.log(y / x) / ratio

    header = ["stage", "time exponent", "client memory exponent", "worker peak exponent",
              "s at 100 M (est.)", "client MB at 100 M (est.)", "worker MB at 100 M (est.)"]  # fmt: skip
    rows = []
    for stage in STAGES:
        if stage not in a["stages"] or stage not in b["stages"]:
            continue
        sa, sb = a["stages"][stage], b["stages"][stage]
        et, em = (
            exponent(sa["wall_s"], sb["wall_s"]),
            exponent(sa["peak_rss_mb"], sb["peak_rss_mb"]),
        )
        grow = target / b["n_users"]
        row = [stage, f"{et:.2f}", f"{em:.2f}"]
        if sa.get("worker_peak_rss_mb") and sb.get("worker_peak_rss_mb"):
            wa, wb = max(sa["worker_peak_rss_mb"]), max(sb["worker_peak_rss_mb"])
            ew = exponent(wa, wb)
            row += [f"{ew:.2f}"]
            worker = f"{wb * grow**ew:.0f}"
        else:
            row += ["—"]
            worker = "—"
        row += [f"{sb['wall_s'] * grow**et:.0f}", f"{sb['peak_rss_mb'] * grow**em:.0f}", worker]
        rows.append(row)
    total_s = sum(float(r[4]) for r in rows)
    worker_mb = max(float(r[6]) for r in rows if r[6] != "—")
    client = max(rows, key=lambda r: float(r[5]))
    largest_worker = max(
        mb for st in b["stages"].values() for mb in st.get("worker_peak_rss_mb", [])
    )
    cores = os.cpu_count() or 1
    estimate = [
        "",
        "## 100 M users: an estimate from these exponents",
        "",
        f"Every stage but decide works on the cluster. Extended by these exponents, a full "
        f"`dvc repro` of 100 M users would take about {total_s / 60:.0f} min on this cluster "
        f"({b['dask']['workers']} workers sharing {cores} cores), each worker peaking near "
        f"{worker_mb / 1024:.1f} GB against its {b['dask']['memory_limit']} limit (the "
        f"largest at {b['n_users']:,} users: {largest_worker / 1024:.1f} GB), and the largest "
        f"client process ({client[0]}) near {float(client[5]) / 1024:.1f} GB. What grows in "
        "the client is a few columns of numbers per user of the month a stage judges "
        "(labels, fees, scores, ranks and the metrics' sorted copies), not tables: at "
        f"{b['n_users']:,} users {b['peak_rss_mb'] * 2**20 / b['n_users']:.0f} bytes per "
        "user at the largest client; the gathered samples are bounded by params. "
        f"The work is per partition, so on N machines of {cores} cores it divides about N "
        f"ways: about {total_s / 60 / 10:.0f} min on 10 machines, {total_s / 60 / 25:.0f} "
        "min on 25 (an assumption, not measured here: one machine is all these tests have; "
        "the client's share does not divide).",
    ]
    return ["", f"## Growth from {a['n_users']:,} to {b['n_users']:,} users", "",
            "Exponent: log(large / small) / log(users ratio); 1 is linear, 0 is flat. The "
            "estimates extend each stage's exponent to 100 M users on this cluster's shape.",
            "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows), *estimate]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[7043, 100_000, 1_000_000])
    parser.add_argument("--months", type=int, default=2)
    parser.add_argument("--noop-repeats", type=int, default=3)
    parser.add_argument("--engine", choices=["local", "dask"], default="local")
    parser.add_argument("--workers", type=int, default=3, help="dask: LocalCluster workers")
    parser.add_argument("--memory-limit", default="3GB", help="dask: limit per worker")
    parser.add_argument("--partition-rows", type=int, default=1_000_000, help="dask: part size")
    parser.add_argument("--lake-chunk-users", type=int, default=5_000_000,
                        help="dask: users generated at a time for the lake")  # fmt: skip
    args = parser.parse_args()
    name = "scale" if args.engine == "dask" else "pipeline"
    dask = None
    if args.engine == "dask":
        dask = {"workers": args.workers, "memory_limit": args.memory_limit,
                "partition_rows": args.partition_rows,
                "lake_chunk_users": args.lake_chunk_users}  # fmt: skip
    path = RESULTS / f"{name}.json"
    results = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    results["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    for n_users in args.users:
        run_result = bench_size(n_users, args.months, args.noop_repeats, dask)
        results["runs"][f"{n_users}x{args.months}"] = run_result
        RESULTS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
        (RESULTS / f"{name}.md").write_text(render_scale(results) if dask else render(results))
    print(f"wrote {path} and {name}.md")


if __name__ == "__main__":
    main()
