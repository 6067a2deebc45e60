"""evaluate: test-set metrics, plot data for `dvc plots`, metrics logged to the train run."""

from __future__ import annotations

import logging
from pathlib import Path

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

from churn import modelfile, tracking
from churn.errors import ChurnError
from churn.io import (
    atomic_write_text,
    read_json,
    require,
    round_floats,
    sha256_file,
    write_json,
)
from churn.model import feature_names
from churn.params import Params
from churn.prepare import PREPARED_DIR
from churn.train import MODEL_FILE, MODELS_DIR

log = logging.getLogger("churn.evaluate")

REPORTS_DIR = Path("reports")
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
    """Permutation importance (drop in ROC AUC) on raw features, on a seeded sample."""
    if len(x) > rows:
        sample = x.sample(n=rows, random_state=random_state)
        x, y = sample, y[x.index.get_indexer(sample.index)]
    result = permutation_importance(
        model, x, y, scoring="roc_auc", n_repeats=5, random_state=random_state, n_jobs=1
    )
    pairs = sorted(
        zip(x.columns, result.importances_mean, strict=True), key=lambda kv: (-kv[1], kv[0])
    )
    return [{"feature": name, "importance": float(value)} for name, value in pairs]


LEAK_MODEL_AUC = 0.995

# reports/metrics.json (what `dvc metrics show/diff` print) holds these, so the table stays
# within 120 columns; the rest (counts, rates, precision, recall) go to evaluation.json.
HEADLINE = ("roc_auc", "pr_auc", "f1", "accuracy", "recall_at_top_10pct", "brier", "log_loss")


def run(
    params: Params,
    prepared_dir: Path = PREPARED_DIR,
    models_dir: Path = MODELS_DIR,
    reports_dir: Path = REPORTS_DIR,
    track: bool = True,
) -> dict:
    model_path = models_dir / MODEL_FILE
    test_path = prepared_dir / "test.parquet"
    require(model_path, test_path, prepared_dir / "features.json")
    spec = read_json(prepared_dir / "features.json")
    model: Pipeline = modelfile.load(model_path)
    test = pd.read_parquet(test_path)
    x = test[feature_names(spec)]
    y = test[spec["label"]].astype(int).to_numpy()
    scores = model.predict_proba(x)[:, 1]
    threshold = params.train.threshold
    metrics = compute_metrics(y, scores, threshold, spec["n_train"])
    if metrics["roc_auc"] >= LEAK_MODEL_AUC and "*" not in params.train.allow_leaky:
        raise ChurnError(
            f"test ROC AUC {metrics['roc_auc']:.4f} >= {LEAK_MODEL_AUC}: too good to be true "
            "for churn; look for columns known only after churn and leave them out with "
            "ingest.table.drop_columns, or accept it with train.allow_leaky: ['*']"
        )
    log.info("roc_auc %.4f  pr_auc %.4f  f1 %.4f on %d test rows",
             metrics["roc_auc"], metrics["pr_auc"], metrics["f1"], len(y))  # fmt: skip

    plots_dir = reports_dir / "plots"
    write_json(reports_dir / "metrics.json", {k: metrics[k] for k in HEADLINE})
    write_json(reports_dir / "evaluation.json",
               {k: v for k, v in metrics.items() if k not in HEADLINE})  # fmt: skip
    for name, rows in curves(y, scores).items():
        write_json(plots_dir / f"{name}.json", {name: rows}, digits=4)
    predicted = (scores >= threshold).astype(int)
    confusion = pd.DataFrame({"actual": y, "predicted": predicted})
    atomic_write_text(plots_dir / "confusion.csv", confusion.to_csv(index=False))
    log.info("computing permutation importance on up to %d rows", params.evaluate.importance_rows)
    ranks = importance(model, x, y, params.evaluate.importance_rows, params.random_state)
    write_json(plots_dir / "importance.json", {"importance": ranks}, digits=5)

    if track:
        sha = sha256_file(model_path)
        run_id = tracking.find_run_by_model_sha(params.mlflow.experiment, sha)
        if run_id is None:
            log.warning("no MLflow run has model sha256 %s…; metrics not logged", sha[:12])
        else:
            numeric = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
            tracking.log_metrics(run_id, numeric, [reports_dir / "metrics.json"])
            log.info("logged metrics to MLflow run %s", run_id)
    return metrics
