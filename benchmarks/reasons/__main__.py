"""What reasons cost: per row served in a 1 000-id batch, and `churn score` at 1 M users.

    python benchmarks/reasons [--users 1000000] [--repeats 15]

Run from the repo root after `dvc repro`. Two models: this repo's champion, and a
histogram-boosting Pipeline fitted here with the params' settings on the default synthetic
month (so TreeSHAP is measured too, whatever auto picked). One thread, as every stage pins.

1. Served: a real `churn serve` (one uvicorn worker on 127.0.0.1) of the champion answers
   POST /predict/batch with 1 000 known ids, with and without `?explain=true`, alternating;
   the median difference / 1 000 is the cost per row (target ≤ 0.5 ms). The same work in
   process (contributions + top three of 1 000 preprocessed rows) for both models.
2. Scored: `score.score_users` on a generated month of `--users` users with and without
   reasons (reason_1..3); the ratio is the cost (target ≤ 2x).

Results: benchmarks/results/reasons.{json,md}. Nothing in the repo is written.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
bench_score = importlib.import_module("score.__main__")  # one_thread, champion_model, month
bench_serving = importlib.import_module("serving.__main__")  # start, stop, free_port

ROOT = bench_score.ROOT
RESULTS = bench_score.RESULTS
BATCH = 1000


def served(online_ids: list[str], repeats: int) -> dict:
    """Median /predict/batch time for 1 000 ids with and without reasons, real server."""
    import httpx

    port = bench_serving.free_port()
    url = f"http://127.0.0.1:{port}"
    body = {"user_ids": online_ids[:BATCH]}
    command = [str(Path(sys.executable).parent / "churn"), "serve", "--port", str(port)]
    proc, _ = bench_serving.start(command, (f"{url}/predict/batch?explain=true", body),
                                  {**os.environ})  # fmt: skip
    times: dict[str, list[float]] = {"plain": [], "explain": []}
    try:
        with httpx.Client(timeout=60) as client:
            for _ in range(repeats):
                for kind, query in (("plain", ""), ("explain", "?explain=true")):
                    t0 = time.perf_counter()
                    answer = client.post(f"{url}/predict/batch{query}", json=body)
                    times[kind].append(time.perf_counter() - t0)
                    answer.raise_for_status()
            sample = answer.json()["predictions"][0]
    finally:
        bench_serving.stop(proc)
    plain, explain = statistics.median(times["plain"]), statistics.median(times["explain"])
    return {"plain_ms": round(plain * 1000, 2), "explain_ms": round(explain * 1000, 2),
            "per_row_ms": round((explain - plain) * 1000 / BATCH, 4),
            "example": sample}  # fmt: skip


def in_process(compiled, rows, values, repeats: int) -> dict:
    from churn.reasons import explainer_for, top_reasons

    t0 = time.perf_counter()
    explainer = explainer_for(compiled)
    build_s = time.perf_counter() - t0
    timings = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _, contributions = explainer.contributions(rows)
        top_reasons(explainer, contributions, values, 3)
        timings.append(time.perf_counter() - t0)
    return {"kind": explainer.kind, "first_build_s": round(build_s, 3),
            "per_row_ms": round(statistics.median(timings) * 1000 / len(rows), 4)}  # fmt: skip


def scored(model, contract, online, decision, repeats: int) -> dict:
    from churn.score import score_users

    runs: dict[str, list[float]] = {"plain": [], "reasons": []}
    for _ in range(repeats):  # alternating, so a slow spell of the machine hits both
        for kind, reasons in (("plain", False), ("reasons", True)):
            t0 = time.perf_counter()
            score_users(model, contract, online, "user_id", decision, reasons=reasons)
            runs[kind].append(time.perf_counter() - t0)
    out = {f"{kind}_s": round(min(times), 2) for kind, times in runs.items()}
    out.update({f"{kind}_runs_s": [round(t, 2) for t in times] for kind, times in runs.items()})
    out["ratio"] = round(out["reasons_s"] / out["plain_s"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000, help="users scored")
    parser.add_argument("--repeats", type=int, default=15, help="batches timed per kind")
    parser.add_argument("--score-repeats", type=int, default=5, help="timed scoring runs")
    args = parser.parse_args()
    bench_score.one_thread()
    import pandas as pd

    from churn.fastpath import check_sample, compile_pipeline
    from churn.io import read_json
    from churn.model import build_pipeline, feature_names, fit_pipeline

    params, champion, model, contract = bench_score.champion_model()
    models = {"champion": (model, contract)}
    train = pd.read_parquet("data/prepared/train.parquet")
    spec = read_json("data/prepared/features.json")
    names = feature_names(spec)
    hist = build_pipeline(spec, params.train, params.random_state, model="hist_gb")
    hist = fit_pipeline(hist, train[names], train[spec["label"]].astype(int))
    models["hist_gb"] = (hist, {**contract, "model": "hist_gb"})
    online = pd.read_parquet("data/prepared/online_features.parquet")

    result: dict = {"batch": BATCH, "users": args.users, "score_repeats": args.score_repeats,
                    "models": {}}  # fmt: skip
    print("serving the champion: 1 000-id batches with and without reasons ...", flush=True)
    result["served_champion"] = served(online["user_id"].astype(str).tolist(), args.repeats)
    print(json.dumps(result["served_champion"]["per_row_ms"]), "ms per row", flush=True)
    month = bench_score.generated_month(args.users)
    print(f"generated {len(month):,} users", flush=True)
    for name, (one, its_contract) in models.items():
        compiled = compile_pipeline(one, check_sample(online))
        batch = online.head(BATCH)
        rows = compiled.transform(*compiled.encode(batch))
        values = batch[list(compiled.features)].to_numpy(dtype=object).tolist()
        entry = {"model": its_contract["model"],
                 "in_process": in_process(compiled, rows, values, args.repeats)}  # fmt: skip
        print(f"{name}: {entry['in_process']}", flush=True)
        entry["score"] = scored(one, its_contract, month, params.decision, args.score_repeats)
        print(f"{name}: {entry['score']}", flush=True)
        result["models"][name] = entry
    result["machine"] = (f"{platform.machine()}, {os.cpu_count()} cores, Python "
                         f"{platform.python_version()}, one thread")  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "reasons.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "reasons.md").write_text(render(result, champion))
    print((RESULTS / "reasons.md").read_text())


def render(r: dict, champion: dict) -> str:
    s = r["served_champion"]
    lines = [
        "# Reasons benchmark (`python benchmarks/reasons`)",
        "",
        f"{r['machine']}. Champion: version {champion['version']} ({champion['model']}).",
        "",
        "## Served: POST /predict/batch, 1 000 known ids, one uvicorn worker",
        "",
        "| | median ms per batch |",
        "|---|---|",
        f"| without reasons | {s['plain_ms']} |",
        f"| `?explain=true` (top 3) | {s['explain_ms']} |",
        "",
        f"Reasons cost **{s['per_row_ms']} ms per row** served (target ≤ 0.5 ms).",
        "",
        "## In process and in `churn score`",
        "",
        f"Contributions + top three of 1 000 preprocessed rows; `score_users` on {r['users']:,} "
        f"generated users with and without reason_1..3 (best of {r['score_repeats']} "
        "alternating runs each; every run is in reasons.json).",
        "",
        "| model | kind | ms per row (1 000 rows) | score s | score with reasons s | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in r["models"].items():
        p, sc = m["in_process"], m["score"]
        lines.append(f"| {name} ({m['model']}) | {p['kind']} | {p['per_row_ms']} | "
                     f"{sc['plain_s']} | {sc['reasons_s']} | {sc['ratio']}x |")  # fmt: skip
    lines += ["", "Target: reasons ≤ 2x `churn score`'s time at 1 M users.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
