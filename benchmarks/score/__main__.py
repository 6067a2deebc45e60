"""Scoring at scale: the champion scores every user of a 1 M-user month (`churn score`'s work).

    python benchmarks/score --users 1000000

Uses this repo's champion (run `dvc repro` first). A month of `--users` synthetic users
is generated and featurised the way ingest + prepare do (not timed), then
`score.score_users` (calibrated probabilities, decisions, expected values, ranks,
deciles) and the parquet write are timed, with one thread as every stage pins.
Results: benchmarks/results/score.{json,md}. Nothing in the repo is written.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def one_thread() -> None:
    """From the repo root, with one BLAS/OpenMP thread, as every stage pins."""
    os.chdir(ROOT)
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = "1"
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def champion_model():
    """The repo's params, champion entry, its verified model and its feature contract."""
    from churn import modelfile, registry
    from churn.io import read_json
    from churn.params import load_params

    params = load_params()
    champion = registry.read_champion(registry.lineage_dir(params.promote.model_name))
    if champion is None:
        raise SystemExit("no champion: run `dvc repro` first")
    model = modelfile.load(registry.verified_artifact(champion))
    return params, champion, model, read_json(registry.contract_file(champion))


def generated_month(users: int):
    """A synthetic month of `users` users, featurised as ingest + prepare do (no labels)."""
    from churn import ingest, synthetic
    from churn.params import parse_params
    from churn.prepare import build_features, join_snapshot

    source = parse_params({"ingest": {"synthetic": {"n_users": users, "n_months": 1}}})
    _, tables = next(synthetic.generate(source.ingest.synthetic))
    typed = ingest.validate_snapshot(tables, {n: f"synthetic/{n}" for n in tables}, 0.05)
    online = build_features(join_snapshot(typed), ingest.feature_kinds(typed))
    return online.drop(columns=["churn_label"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3, help="timed scoring runs")
    args = parser.parse_args()
    one_thread()
    from churn.io import write_parquet
    from churn.score import score_users

    params, champion, model, contract = champion_model()
    started = time.perf_counter()
    online = generated_month(args.users)
    prepared_s = time.perf_counter() - started
    print(f"generated and featurised {len(online):,} users in {prepared_s:.1f} s", flush=True)

    timings = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeats):
            t0 = time.perf_counter()
            scored = score_users(model, contract, online, "user_id", params.decision)
            t1 = time.perf_counter()
            write_parquet(scored.table, Path(tmp) / "scored.parquet")
            t2 = time.perf_counter()
            timings.append({"score_s": round(t1 - t0, 3), "write_s": round(t2 - t1, 3),
                            "total_s": round(t2 - t0, 3)})  # fmt: skip
            print(f"[{k + 1}/{args.repeats}] scored in {t1 - t0:.2f} s, written in "
                  f"{t2 - t1:.2f} s", flush=True)  # fmt: skip
    best = min(timings, key=lambda t: t["total_s"])
    result = {
        "users": len(online),
        "model": f"{champion['model_name']} v{champion['version']} ({contract['model']}, "
        f"calibration {contract.get('calibration', 'none')})",
        "threads": 1,
        "runs": timings,
        "best_total_s": best["total_s"],
        "target_s": 20.0,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "contacted": scored.report["contacted"],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "score.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Scoring benchmark (`python benchmarks/score`)",
        "",
        f"{result['users']:,} users, {result['model']}, one thread, {result['machine']}.",
        "Generation and featurising are not timed; score = predict_proba + decisions + "
        "expected value + rank + decile; write = the parquet file.",
        "",
        "| run | score s | write s | total s |",
        "|---|---|---|---|",
        *[f"| {i} | {t['score_s']} | {t['write_s']} | {t['total_s']} |"
          for i, t in enumerate(timings, 1)],
        "",
        f"Best total {result['best_total_s']} s (target ≤ {result['target_s']:g} s); peak RSS "
        f"{result['peak_rss_mb']} MB (including the generated month).",
    ]  # fmt: skip
    (RESULTS / "score.md").write_text("\n".join(lines) + "\n")
    print(json.dumps({k: result[k] for k in ("users", "best_total_s", "peak_rss_mb")}))


if __name__ == "__main__":
    main()
