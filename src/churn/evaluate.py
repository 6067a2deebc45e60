"""evaluate: test-set metrics, plot data for `dvc plots`, metrics logged to the train run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.inspection import permutation_importance
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)
from sklearn.pipeline import Pipeline

from churn import engine, modelfile, tracking
from churn.decision import (
    customer_values,
    realised_value,
    value_basis,
    value_curve,
    with_save_rate,
)
from churn.errors import ChurnError
from churn.io import (
    REPORTS_DIR,
    atomic_write_text,
    read_json,
    require,
    round_floats,
    sha256_file,
    write_json,
)
from churn.model import churn_scores, feature_names, seeded_rows
from churn.params import DecisionParams, Params
from churn.prepare import PREPARED_DIR
from churn.train import CONTRACT_FILE, MODEL_FILE, MODELS_DIR, SUMMARY_FILE

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger("churn.evaluate")

PLOTS_DIR = REPORTS_DIR / "plots"
GRID = np.linspace(0.0, 1.0, 101)


def recall_at_top(y: np.ndarray, scores: np.ndarray, fraction: float = 0.1) -> float:
    """Share of all churners found among the `fraction` highest-scored users."""
    positives = int(y.sum())
    if positives == 0:
        return 0.0
    k = max(1, int(np.ceil(fraction * len(y))))
    top = np.argsort(-scores, kind="stable")[:k]
    return float(y[top].sum() / positives)


def quantile_bins(scores: np.ndarray, bins: int = 10, highest_first: bool = False) -> list:
    """Row indices in `bins` equal-count bins by score (ties in row order): the one binning
    of calibration error, its noise floor, lift and gains."""
    order = np.argsort(-scores if highest_first else scores, kind="stable")
    return [b for b in np.array_split(order, min(bins, max(len(scores), 1))) if len(b)]


def expected_calibration_error(y: np.ndarray, scores: np.ndarray, bins: int = 10) -> float:
    """ECE over `bins` quantile bins (equal counts): the count-weighted mean gap between
    the mean predicted probability and the observed churn rate of each bin."""
    if len(y) == 0:
        return 0.0
    gaps = [len(b) * abs(float(y[b].mean()) - float(scores[b].mean()))
            for b in quantile_bins(scores, bins)]  # fmt: skip
    return float(sum(gaps) / len(y))


def ece_noise_floor(scores: np.ndarray, bins: int = 10) -> float:
    """The ECE a perfectly calibrated model would still show on this many rows: per bin,
    the mean absolute deviation of a churn count drawn from the predicted probabilities
    (normal approximation, sqrt(2/pi) x sd / n). On 160 test rows it is ~0.08: a ceiling
    below it would judge luck, not calibration."""
    if len(scores) == 0:
        return 0.0
    spread = [np.sqrt(2 / np.pi) * np.sqrt(np.sum(scores[b] * (1 - scores[b])))
              for b in quantile_bins(scores, bins)]  # fmt: skip
    return float(sum(spread) / len(scores))


def lift_table(y: np.ndarray, scores: np.ndarray, bins: int = 10) -> list[dict]:
    """Deciles by score (1 = the highest): churn rate, lift over the base rate and the
    cumulative share of all churners found (gains)."""
    base = float(y.mean()) if len(y) else 0.0
    total = max(int(y.sum()), 1)
    rows, found, seen = [], 0, 0
    for k, chunk in enumerate(quantile_bins(scores, bins, highest_first=True), 1):
        churners = int(y[chunk].sum())
        found, seen = found + churners, seen + len(chunk)
        rate = churners / len(chunk)
        rows.append({"decile": k, "users": len(chunk), "churners": churners,
                     "churn_rate": round(rate, 6), "lift": round(rate / base, 4) if base else 0.0,
                     "contacted_share": round(seen / len(y), 4),
                     "churners_found_share": round(found / total, 6)})  # fmt: skip
    return rows


def compute_metrics(y: np.ndarray, scores: np.ndarray, threshold: float, n_train: int) -> dict:
    predicted = (scores >= threshold).astype(int)
    return round_floats(
        {
            "roc_auc": roc_auc_score(y, scores),
            "pr_auc": average_precision_score(y, scores),
            "f1": f1_score(y, predicted, zero_division=0),
            "accuracy": accuracy_score(y, predicted),
            "precision": precision_score(y, predicted, zero_division=0),
            "recall": recall_score(y, predicted, zero_division=0),
            "recall_at_top_10pct": recall_at_top(y, scores, 0.1),
            "brier": brier_score_loss(y, scores),
            "log_loss": log_loss(y, np.clip(scores, 1e-15, 1 - 1e-15), labels=[0, 1]),
            "ece": expected_calibration_error(y, scores),
            "ece_noise_floor": ece_noise_floor(scores),
            "predicted_churn_rate": float(scores.mean()),
            "n_train": int(n_train),
            "n_test": len(y),
            "positive_rate": float(predicted.mean()),
            "label_rate": float(y.mean()),
            "threshold": float(threshold),
        },
        6,
    )


def curves(y: np.ndarray, scores: np.ndarray) -> dict[str, list[dict]]:
    """ROC, PR and calibration curves on fixed grids so the files stay small and stable."""
    fpr, tpr, _ = roc_curve(y, scores)
    precision, recall, _ = precision_recall_curve(y, scores)
    order = np.argsort(recall, kind="stable")
    prob_true, prob_pred = calibration_curve(y, scores, n_bins=10, strategy="quantile")
    return {
        "roc": [
            {"fpr": float(f), "tpr": float(t)}
            for f, t in zip(GRID, np.interp(GRID, fpr, tpr), strict=True)
        ],
        "pr": [
            {"recall": float(r), "precision": float(p)}
            for r, p in zip(GRID, np.interp(GRID, recall[order], precision[order]), strict=True)
        ],
        "calibration": [
            {"mean_predicted": float(p), "fraction_positive": float(t), "perfect": float(p)}
            for p, t in zip(prob_pred, prob_true, strict=True)
        ],
    }


def importance(
    model: Pipeline, x: pd.DataFrame, y: np.ndarray, rows: int, random_state: int
) -> list[dict]:
    """Permutation importance (drop in ROC AUC) on raw features, on a seeded sample
    (`seeded_rows`: what `x.sample(n=rows, random_state=random_state)` picks)."""
    picked = seeded_rows(len(x), rows, random_state)
    if picked is not None:
        x, y = x.iloc[picked], y[picked]
    result = permutation_importance(
        model, x, y, scoring="roc_auc", n_repeats=5, random_state=random_state, n_jobs=1
    )
    pairs = sorted(
        zip(x.columns, result.importances_mean, strict=True), key=lambda kv: (-kv[1], kv[0])
    )
    return [{"feature": name, "importance": float(value)} for name, value in pairs]


LEAK_MODEL_AUC = 0.995

# reports/metrics.json (what `dvc metrics show/diff` print) holds these; the rest (counts,
# rates, f1, accuracy, log loss, precision, recall) go to evaluation.json.
HEADLINE = ("roc_auc", "pr_auc", "recall_at_top_10pct", "brier", "ece")
OOT_KEYS = ("roc_auc", "pr_auc", "ece")


def money(y: np.ndarray, scores: np.ndarray, values: np.ndarray, threshold: float,
          p: DecisionParams) -> dict:  # fmt: skip
    """Realised net value of offering the deal to everyone at or above the threshold."""
    value = realised_value(y, scores >= threshold, values, p)
    return {"expected_value": round(value, 2),
            "expected_value_per_user": round(value / max(len(y), 1), 4)}  # fmt: skip


def headline(metrics: dict, cv: dict, value: dict, oot: dict | None) -> dict:
    """The metrics.json layout: test split, CV on the training split, money, next month."""
    out = {k: metrics[k] for k in HEADLINE}
    out["roc_auc_cv_mean"] = round(cv["roc_auc_mean"], 6)
    out["roc_auc_cv_std"] = round(cv["roc_auc_std"], 6)
    out["expected_value_per_user"] = value["expected_value_per_user"]
    if oot is not None:
        out["oot"] = oot
    return out


def run(
    params: Params,
    prepared_dir: Path = PREPARED_DIR,
    models_dir: Path = MODELS_DIR,
    reports_dir: Path = REPORTS_DIR,
    track: bool = True,
) -> dict:
    model_path = models_dir / MODEL_FILE
    test_path = prepared_dir / "test.parquet"
    require(model_path, test_path, prepared_dir / "features.json",
            models_dir / CONTRACT_FILE, models_dir / SUMMARY_FILE)  # fmt: skip
    spec = read_json(prepared_dir / "features.json")
    params, save_rate_basis = with_save_rate(params)
    contract = read_json(models_dir / CONTRACT_FILE)
    summary = read_json(models_dir / SUMMARY_FILE)
    model: Pipeline = modelfile.load(model_path)
    names = feature_names(spec)
    with engine.maybe_client(params) as cluster:
        test, scores, sample = scored_split(cluster, test_path, model, names, spec["label"],
                                            params)  # fmt: skip
        later = None
        if spec.get("oot_as_of"):
            oot_path = prepared_dir / "oot.parquet"
            later, oot_scores, _ = scored_split(cluster, oot_path, model, names, spec["label"],
                                                params, sample=False)  # fmt: skip
    y = test[spec["label"]].astype(int).to_numpy()
    threshold = float(contract["threshold"])  # train chose it (train.threshold: auto)
    metrics = compute_metrics(y, scores, threshold, spec["n_train"])
    if metrics["roc_auc"] >= LEAK_MODEL_AUC and "*" not in params.train.allow_leaky:
        raise ChurnError(
            f"test ROC AUC {metrics['roc_auc']:.4f} >= {LEAK_MODEL_AUC}: too good to be true "
            "for churn; look for columns known only after churn and leave them out with "
            "ingest.table.drop_columns, or accept it with train.allow_leaky: ['*']"
        )
    values = customer_values(test, params.decision)
    value = money(y, scores, values, threshold, params.decision)
    oot = None
    if later is not None:
        y_oot = later[spec["label"]].astype(int).to_numpy()
        del later
        oot_metrics = compute_metrics(y_oot, oot_scores, threshold, 0)
        oot = {"as_of": spec["oot_as_of"], **{k: oot_metrics[k] for k in OOT_KEYS}}
        log.info("out of time (%s, %d users): roc_auc %.4f  ece %.4f", spec["oot_as_of"],
                 len(y_oot), oot["roc_auc"], oot["ece"])  # fmt: skip
    log.info("test: roc_auc %.4f  pr_auc %.4f  ece %.4f  predicted churn %.3f vs actual %.3f; "
             "CV roc_auc %.4f ± %.4f; threshold %s: %s per user", metrics["roc_auc"],
             metrics["pr_auc"], metrics["ece"], metrics["predicted_churn_rate"],
             metrics["label_rate"], summary["cv"]["roc_auc_mean"], summary["cv"]["roc_auc_std"],
             threshold, value["expected_value_per_user"])  # fmt: skip

    plots_dir = reports_dir / "plots"
    write_json(reports_dir / "metrics.json", headline(metrics, summary["cv"], value, oot))
    details = {k: v for k, v in metrics.items() if k not in HEADLINE}
    details.update(value, threshold_mode=summary["threshold"]["mode"],
                   value_of_a_saved_user=value_basis(list(test.columns), params.decision),
                   save_rate=params.decision.save_rate, save_rate_basis=save_rate_basis,
                   cv_folds=summary["cv"]["roc_auc"], model=summary["model"])  # fmt: skip
    if "search" in summary:
        details["auto_winner"] = summary["search"]["winner"]
    if oot is not None:
        details["oot"] = {k: v for k, v in oot_metrics.items() if k != "n_train"}
    write_json(reports_dir / "evaluation.json", details)
    for name, rows in curves(y, scores).items():
        write_json(plots_dir / f"{name}.json", {name: rows}, digits=4)
    curve = value_curve(y, scores, values, params.decision)
    write_json(plots_dir / "value.json", {"value": curve.rows(len(y))}, digits=4)
    write_json(plots_dir / "lift.json", {"lift": lift_table(y, scores)}, digits=4)
    write_json(plots_dir / "split_vs_oot.json", {"split_vs_oot": comparison(metrics, summary,
               oot)}, digits=4)  # fmt: skip
    predicted = (scores >= threshold).astype(int)
    confusion = pd.DataFrame({"actual": y, "predicted": predicted})
    atomic_write_text(plots_dir / "confusion.csv", confusion.to_csv(index=False))
    log.info("computing permutation importance on up to %d rows", params.evaluate.importance_rows)
    ranks = importance(model, sample[names], sample[spec["label"]].astype(int).to_numpy(),
                       params.evaluate.importance_rows, params.random_state)  # fmt: skip
    write_json(plots_dir / "importance.json", {"importance": ranks}, digits=5)

    if track:
        sha = sha256_file(model_path)
        run_id = tracking.find_run_by_model_sha(params.mlflow.experiment, sha)
        if run_id is None:
            log.warning("no MLflow run has model sha256 %s…; metrics not logged", sha[:12])
        else:
            numeric = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
            numeric.update(value, roc_auc_cv_mean=summary["cv"]["roc_auc_mean"],
                           roc_auc_cv_std=summary["cv"]["roc_auc_std"])  # fmt: skip
            if oot is not None:
                numeric.update({f"oot_{k}": oot[k] for k in OOT_KEYS})
            tracking.log_metrics(run_id, numeric, [reports_dir / "metrics.json"])
            log.info("logged metrics to MLflow run %s", run_id)
    return metrics


def scored_split(
    cluster: Client | None, path: Path, model: Pipeline, names: list[str], label: str,
    params: Params, sample: bool = True,
) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame | None]:  # fmt: skip
    """A labelled split, the model's scores of its rows and the rows permutation importance
    samples (`sample`). Local engine: the whole table here. Dask: the rows scored on the
    workers (churn.engine.file_scores); here only the label and the fee column
    (customer_values) and the sampled rows."""
    if cluster is None:
        table = pd.read_parquet(path)
        return table, churn_scores(model, table, names), table if sample else None
    import pyarrow.parquet as pq

    fee = params.decision.fee_column
    narrow = [c for c in pq.ParquetFile(path).schema_arrow.names if c in (label, fee)]
    table = pd.read_parquet(path, columns=narrow)
    [scores] = engine.file_scores(cluster, path, [model], [names], params.dask.partition_rows)
    if not sample:
        return table, scores, None
    rows = seeded_rows(len(table), params.evaluate.importance_rows, params.random_state)
    rows = np.arange(len(table)) if rows is None else rows  # in the order importance takes
    picked = engine.gather_rows(cluster, path, rows, [*names, label]).reset_index(drop=True)
    return table, scores, picked


def comparison(metrics: dict, summary: dict, oot: dict | None) -> list[dict]:
    """ROC AUC and ECE where they were measured: CV, the test split, the next month."""
    rows = [
        {"where": "CV on the training split", "roc_auc": summary["cv"]["roc_auc_mean"],
         "ece": None},
        {"where": "test split", "roc_auc": metrics["roc_auc"], "ece": metrics["ece"]},
    ]  # fmt: skip
    if oot is not None:
        rows.append({"where": f"next month ({oot['as_of']})", "roc_auc": oot["roc_auc"],
                     "ece": oot["ece"]})  # fmt: skip
    return rows
