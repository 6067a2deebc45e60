"""Training time with scikit-learn's weighted binning and with churn.binning's.

    python benchmarks/train --repeats 3

`churn train`'s fit (`churn.train.fit`: the auto search's CV folds, calibration, the
served model) on this repo's prepared training data (run `dvc repro` first), one thread as
every stage pins, alternating scikit-learn 1.9's `_find_binning_thresholds` and
`churn.binning`'s. Each run's model file sha256 is recorded: the two must be equal.
Then the same for `train.model: hist_gb` alone. Results: benchmarks/results/train.{json,md}.
Nothing in the repo is written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def one_fit(binning_name: str, params, train, spec) -> tuple[float, str]:
    from sklearn.ensemble._hist_gradient_boosting import binning as sk_binning

    from churn import binning, modelfile
    from churn.train import fit  # imports churn.model, which installs churn.binning

    use = binning.find_binning_thresholds if binning_name == "churn" else binning.ORIGINAL
    sk_binning._find_binning_thresholds = use
    started = time.perf_counter()
    trained = fit(train, spec, params)
    seconds = time.perf_counter() - started
    return seconds, hashlib.sha256(modelfile.dumps(trained.model)).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="fits per binning and model")
    args = parser.parse_args()
    import os

    os.chdir(ROOT)
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = "1"
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    import pandas as pd

    from churn.io import read_json
    from churn.params import load_params

    spec_path, train_path = Path("data/prepared/features.json"), Path("data/prepared/train.parquet")
    if not train_path.exists():
        raise SystemExit("no prepared data: run `dvc repro` first")
    spec = read_json(spec_path)
    train = pd.read_parquet(train_path)
    base = load_params()
    rows = []
    for model in (base.train.model, "hist_gb"):
        params = base.model_copy(update={"train": base.train.model_copy(update={"model": model})})
        for repeat in range(args.repeats):
            for name in ("scikit-learn", "churn"):
                seconds, sha = one_fit(name, params, train, spec)
                rows.append({"model": model, "binning": name, "repeat": repeat,
                             "seconds": round(seconds, 3), "model_sha256": sha})  # fmt: skip
                print(f"{model:8} {name:12} run {repeat}: {seconds:6.2f} s  {sha[:12]}", flush=True)
    summary = []
    for model in dict.fromkeys(r["model"] for r in rows):
        of = {n: [r for r in rows if r["model"] == model and r["binning"] == n]
              for n in ("scikit-learn", "churn")}  # fmt: skip
        shas = {r["model_sha256"] for runs in of.values() for r in runs}
        median = {n: statistics.median(r["seconds"] for r in runs) for n, runs in of.items()}
        summary.append({"model": model, "median_s": median, "same_model_bytes": len(shas) == 1,
                        "saved_s": round(median["scikit-learn"] - median["churn"], 2)})  # fmt: skip
    python = platform.python_version()
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {python}, one thread",
        "rows": len(train),
        "features": len(spec["features"]),
        "repeats": args.repeats,
        "summary": summary,
        "runs": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "train.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Training benchmark (`python benchmarks/train`)",
        "",
        f"{result['machine']}. `churn.train.fit` on this repo's prepared training data "
        f"({result['rows']:,} rows x {result['features']} features), {args.repeats} fits per "
        "row, alternating the two binnings; median seconds.",
        "",
        "| train.model | scikit-learn 1.9 binning s | churn.binning s | saved s | same model bytes |",
        "|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(f"| {s['model']} | {s['median_s']['scikit-learn']:.2f} | "
                     f"{s['median_s']['churn']:.2f} | {s['saved_s']:.2f} | "
                     f"{'yes' if s['same_model_bytes'] else 'NO'} |")  # fmt: skip
    (RESULTS / "train.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if not all(s["same_model_bytes"] for s in summary):
        raise SystemExit("the two binnings gave different model bytes")


if __name__ == "__main__":
    main()
