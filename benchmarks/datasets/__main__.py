"""Datasets: the default params on several churn tables — AUC (test, CV, next month), ECE
before/after calibration, predicted vs actual churn rate, threshold and expected value,
and `auto` against a default HistGradientBoosting and a scaled LogisticRegression.

    python benchmarks/datasets [--course ../shared/data/streamflow]

Tables: the built-in synthetic months; the course months (month_000, and month_001 as the
training month) when --course exists; a telecom-style CSV (RowNumber, Surname, blank
TotalCharges, Yes/No label) and a non-linear card-attrition table, both generated here
with fixed seeds. Each runs `churn ingest` + `churn prepare` in a temp folder, then the
train code in process. "Before" = the same estimator with class_weight balanced, no
calibration, threshold 0.5 (the old defaults); "unweighted" = class_weight none, no
calibration. Results: benchmarks/results/datasets.{json,md}. Nothing in the repo is written.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
BIN = Path(sys.executable).parent
HGB_DEFAULTS = {"learning_rate": 0.1, "max_iter": 100, "max_leaf_nodes": 31,
                "min_samples_leaf": 20, "l2_regularization": 0.0}  # fmt: skip


def telecom(n: int = 7000, seed: int = 11) -> pd.DataFrame:
    sys.path.insert(0, str(ROOT))
    from tests.pipeline.test_own_data import telecom_csv

    return telecom_csv(n, seed=seed)


def cards(n: int = 20000, seed: int = 5) -> pd.DataFrame:
    """Interactions a shallow boosted model underfits."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8))
    trans, util = rng.gamma(2, 40, n), rng.beta(2, 5, n)
    logit = (-2.4 + 2.0 * np.sin(2 * x[:, 0]) * x[:, 1] + 1.5 * (x[:, 2] * x[:, 3] > 0.5)
             - 1.2 * (np.abs(x[:, 4]) > 1.2) + 0.02 * (trans - 80) - 30 * (util - 0.3) ** 2
             + 0.8 * x[:, 5] ** 2)  # fmt: skip
    churned = rng.random(n) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame({"CLIENTNUM": [f"C{i:06d}" for i in range(n)],
                         **{f"f{j}": x[:, j].round(4) for j in range(8)},
                         "Total_Trans_Amt": trans.round(2), "Avg_Utilization_Ratio": util.round(3),
                         "Attrition_Flag": np.where(churned, "Attrited Customer",
                                                    "Existing Customer")})  # fmt: skip


def churn_cmd(folder: Path, *args: str) -> None:
    subprocess.run([str(BIN / "churn"), *args], cwd=folder, check=True, capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip


def prepared(folder: Path, settings: list[str]) -> Path:
    (folder / "data" / "external").mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    if settings:
        churn_cmd(folder, "params", "set", *settings)
    churn_cmd(folder, "ingest")
    churn_cmd(folder, "prepare")
    return folder


def measure(folder: Path) -> dict:
    from churn.decision import customer_values
    from churn.evaluate import compute_metrics, money
    from churn.io import read_json
    from churn.model import feature_names
    from churn.params import parse_params
    from churn.train import fit

    raw = yaml.safe_load((folder / "params.yaml").read_text())
    d = folder / "data" / "prepared"
    spec = read_json(d / "features.json")
    train, test = pd.read_parquet(d / "train.parquet"), pd.read_parquet(d / "test.parquet")
    later = pd.read_parquet(d / "oot.parquet")
    names = feature_names(spec)
    y = test[spec["label"]].astype(int).to_numpy()

    def variant(**overrides):
        r = json.loads(json.dumps(raw))
        r["train"].update(overrides)
        return parse_params(r)

    def test_metrics(p):
        trained = fit(train, spec, p)
        s = trained.model.predict_proba(test[names])[:, 1]
        return trained, s, compute_metrics(y, s, trained.contract["threshold"], len(train))

    p = variant()
    trained, scores, m = test_metrics(p)
    threshold = trained.contract["threshold"]
    row = {"rows": len(train) + len(test), "auto_picks": trained.summary["search"]["winner"],
           "test_auc": m["roc_auc"], "cv_auc": trained.summary["cv"]["roc_auc_mean"],
           "cv_std": trained.summary["cv"]["roc_auc_std"], "ece": m["ece"],
           "predicted_rate": m["predicted_churn_rate"], "actual_rate": m["label_rate"],
           "brier": m["brier"], "threshold": threshold,
           **money(y, scores, customer_values(test, p.decision), threshold, p.decision)}  # fmt: skip
    if len(later):
        yo = later[spec["label"]].astype(int).to_numpy()
        mo = compute_metrics(yo, trained.model.predict_proba(later[names])[:, 1], threshold, 0)
        row.update(oot_as_of=spec["oot_as_of"], oot_auc=mo["roc_auc"], oot_ece=mo["ece"])
    model = trained.summary["model"]
    settings = {model: trained.summary["settings"]}
    old = test_metrics(variant(model=model, calibration="none", threshold=0.5, **settings))[2]
    row.update(before_ece=old["ece"], before_predicted_rate=old["predicted_churn_rate"])
    plain = variant(model=model, class_weight="none", calibration="none", threshold=0.5,
                    **settings)  # fmt: skip
    row["unweighted_brier"] = test_metrics(plain)[2]["brier"]
    row["hgb_defaults_auc"] = test_metrics(variant(model="hist_gb", hist_gb=HGB_DEFAULTS))[2][
        "roc_auc"]  # fmt: skip
    row["lr_auc"] = test_metrics(variant(model="logistic_regression"))[2]["roc_auc"]
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--course", type=Path, default=ROOT.parent / "shared/data/streamflow")
    args = parser.parse_args()
    table = ["ingest.source=table", "ingest.table.as_of=2024-01-31", "as_of=2024-01-31"]
    datasets = {"built-in synthetic (7 043 x 6)": (None, [])}
    if args.course.is_dir():
        course = [f"ingest.path={args.course.resolve()}", "ingest.source=snapshots",
                  "ingest.snapshots.first_as_of=2024-01-31"]  # fmt: skip
        datasets["course month_000"] = (None, course)
        datasets["course month_001 as the training month"] = (None, [*course, "as_of=2024-02-29"])
    datasets["telecom-style CSV (generated)"] = (("telco.csv", telecom), [
        *table, "ingest.path=data/external/telco.csv", "ingest.table.id_column=customerID",
        "ingest.table.label_column=Churn"])  # fmt: skip
    datasets["card attrition, non-linear (generated)"] = (("cards.csv", cards), [
        *table, "ingest.path=data/external/cards.csv", "ingest.table.id_column=CLIENTNUM",
        "ingest.table.label_column=Attrition_Flag",
        "ingest.table.positive_label=Attrited Customer"])  # fmt: skip
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = "1"
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, (source, settings)) in enumerate(datasets.items()):
            folder = Path(tmp) / f"d{k}"
            if source is not None:
                (folder / "data" / "external").mkdir(parents=True)
                source[1]().to_csv(folder / "data" / "external" / source[0], index=False)
            print(f"[{k + 1}/{len(datasets)}] {name} ...", flush=True)
            results[name] = measure(prepared(folder, settings))
            print(json.dumps(results[name]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "datasets.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["# Datasets (`python benchmarks/datasets`)", "", __doc__.split("\n\n")[2].strip(), "",
             "| dataset | auto picks | test AUC: auto / HGB defaults / LR | CV AUC ± sd | OOT AUC "
             "(ECE) | ECE before → after | predicted vs actual rate (before) | Brier / unweighted "
             "| threshold | expected value (per user) |", "|" + "---|" * 10]  # fmt: skip
    for name, r in results.items():
        oot = f"{r['oot_auc']} ({r['oot_ece']}, {r['oot_as_of']})" if "oot_auc" in r else "—"
        lines.append(
            f"| {name} | {r['auto_picks']} | {r['test_auc']} / {r['hgb_defaults_auc']} / "
            f"{r['lr_auc']} | {r['cv_auc']} ± {r['cv_std']} | {oot} | {r['before_ece']} → "
            f"{r['ece']} | {r['predicted_rate']} vs {r['actual_rate']} "
            f"({r['before_predicted_rate']}) | {r['brier']} / {r['unweighted_brier']} | "
            f"{r['threshold']} | {r['expected_value']:,} ({r['expected_value_per_user']}) |"
        )
    (RESULTS / "datasets.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / 'datasets.md'}")


if __name__ == "__main__":
    main()
