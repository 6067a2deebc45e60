"""train: fit the Pipeline, write models/, log the MLflow run."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
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
from churn.io import read_json, round_floats, sha256_file, write_json
from churn.model import (
    build_pipeline,
    capped_of,
    feature_contract,
    feature_names,
    fit_pipeline,
    observed_features,
    out_of_fold,
    sample_rows,
)
from churn.params import Params
from churn.prepare import PREPARED_DIR
from churn.search import search

log = logging.getLogger("churn.train")

MODELS_DIR = Path("models")
MODEL_FILE = modelfile.MODEL_FILE
CONTRACT_FILE = "feature_contract.json"
SUMMARY_FILE = "training.json"


@dataclass(frozen=True)
class Trained:
    model: Pipeline
    contract: dict
    summary: dict  # models/training.json


LEAK_AUC = 0.98  # a feature that alone ranks churners this well is a leak until shown not


def single_feature_auc(values: pd.Series, y: np.ndarray) -> float:
    """How well one column alone separates the classes: max(AUC, 1 - AUC). Categories
    score by their level's churn rate, numbers by value (missing: the median)."""
    if values.dtype == object or isinstance(values.dtype, pd.CategoricalDtype):
        keys = values.astype(str).where(values.notna(), "missing")
        score = keys.map(pd.Series(y, index=keys.index).groupby(keys).mean()).to_numpy(float)
    else:
        score = values.astype(float).fillna(values.astype(float).median()).to_numpy()
    if np.unique(score).size < 2:
        return 0.5
    auc = float(roc_auc_score(y, score))
    return max(auc, 1.0 - auc)


def leaky_features(train: pd.DataFrame, spec: dict, allowed: list[str]) -> dict[str, float]:
    """Features (not allow-listed) whose own AUC on the training split is >= LEAK_AUC."""
    if "*" in allowed:
        return {}
    y = train[spec["label"]].astype(int).to_numpy()
    scores = {name: single_feature_auc(train[name], y) for name in feature_names(spec)
              if name not in allowed}  # fmt: skip
    return {name: auc for name, auc in scores.items() if auc >= LEAK_AUC}


@dataclass(frozen=True)
class TrainingSplit:
    """What `fit` takes of the training split: its size, the seeded CV and fit samples
    (the model's columns and the 0/1 label), the contract's observed values of every row
    and the first rows (MLflow's input example). `split_here` makes it of a table in
    memory; the dask engine of a file on a cluster (churn.engine.training_split)."""

    rows: int
    cv: tuple[pd.DataFrame, pd.Series]
    fit: tuple[pd.DataFrame, pd.Series]
    observed: list[dict]
    example: pd.DataFrame


def split_here(train: pd.DataFrame, spec: dict, params: Params) -> TrainingSplit:
    """`TrainingSplit` of the training rows in memory."""
    p, names = params.train, feature_names(spec)
    y = train[spec["label"]].astype(int)
    # Samples take their rows, then the model's columns: an 8 M-row table is never copied.
    # CV estimates (search, out-of-fold threshold) on a seeded sample of big tables;
    xs, ys = sample_rows(train, y, p.cv_max_rows, params.random_state)
    # the served model on one of very big tables: its memory grows with the rows (~1 GB a
    # million, calibration folds included), its accuracy had stopped growing long before
    xf, yf = (train, y) if p.fit_max_rows is None else sample_rows(train, y, p.fit_max_rows,
                                                                  params.random_state)  # fmt: skip
    return TrainingSplit(len(train), (xs[names], ys), (xf[names], yf),
                         observed_features(spec, train), train[names].head(100))  # fmt: skip


def fit(train: pd.DataFrame | TrainingSplit, spec: dict, params: Params) -> Trained:
    """Pure: a fitted, calibrated Pipeline, its feature contract and the training summary
    (CV folds, chosen threshold, search table); refuses features that leak (checked on
    the rows the model is fitted on)."""
    split = train if isinstance(train, TrainingSplit) else split_here(train, spec, params)
    p = params.train
    (xs, ys), (xf, yf) = split.cv, split.fit
    leaks = leaky_features(xf.assign(**{spec["label"]: yf}), spec, p.allow_leaky)
    if leaks:
        shown = ", ".join(f"'{n}' (AUC {a:.3f} alone)" for n, a in sorted(leaks.items()))
        raise ChurnError(
            f"{shown} predict the label almost perfectly on the training split: a leak (a "
            "column known only after churn)? Leave it out with ingest.table.drop_columns "
            "(or ingest.snapshots.drop_columns), or accept it with train.allow_leaky"
        )
    names = feature_names(spec)
    capped = capped_of(split.observed, p.max_categories)
    levels = {e["name"]: len(e.get("categories", ())) for e in split.observed}
    for name in capped:
        log.info("'%s': %d levels; the %d most frequent are kept, the rest are 'infrequent'",
                 name, levels[name], p.max_categories - 1)  # fmt: skip
    summary: dict = {
        "rows": split.rows,
        "fit_rows": len(xf),
        "cv_rows": len(xs),
        "folds": p.cv_folds,
    }
    if p.model == "auto":
        result = search(spec, xs, ys, p, params.random_state, capped)
        model, settings = result.winner.model, result.winner.settings
        summary["search"] = {"winner": result.winner.label, "candidates": result.table}
    else:
        model, settings = p.model, getattr(p, p.model)
    log.info("fitting %s (calibration: %s, %d folds) on %d rows%s", model, p.calibration,
             p.cv_folds, len(xf), "" if len(xf) == split.rows else
             f" (a seeded sample of {split.rows}: train.fit_max_rows)")  # fmt: skip
    pipeline = build_pipeline(spec, p, params.random_state, capped, model, settings)
    fit_pipeline(pipeline, xf, yf)
    del xf, yf
    base = build_pipeline(spec, p, params.random_state, capped, model, settings, calibrate=False)
    probability, per_fold = out_of_fold(pipeline, base, xs, ys, p, params.random_state)
    values = customer_values(xs, params.decision)
    curve = value_curve(ys.to_numpy(), probability, values, params.decision)
    threshold = curve.best if p.threshold == "auto" else float(p.threshold)
    log.info("out-of-fold ROC AUC %.4f ± %.4f; threshold %s (%s)", np.mean(per_fold),
             np.std(per_fold), threshold, "most net value" if p.threshold == "auto"
             else "params")  # fmt: skip
    summary.update(
        model=model,
        settings=settings.model_dump(),
        calibration=p.calibration,
        cv={
            "roc_auc": per_fold,
            "roc_auc_mean": float(np.mean(per_fold)),
            "roc_auc_std": float(np.std(per_fold)),
        },
        threshold={
            "mode": "auto" if p.threshold == "auto" else "fixed",
            "value": threshold,
            "basis": "out-of-fold calibrated probabilities on the training split",
            "value_of_a_saved_user": value_basis(names, params.decision),
            "net_value_per_user": realised_value(
                ys.to_numpy(), probability >= threshold, values, params.decision
            )
            / len(ys),
        },
    )
    contract = feature_contract(spec, split.observed, model, threshold, tuple(capped))
    contract["calibration"] = p.calibration
    return Trained(pipeline, contract, round_floats(summary, 6))


def model_params(params: Params, summary: dict) -> dict[str, object]:
    """Flat params for MLflow: the fitted estimator's hyper-parameters and the data pins."""
    return {
        "model": summary["model"],
        "model_param": params.train.model,
        "class_weight": params.train.class_weight,
        "calibration": params.train.calibration,
        "threshold": summary["threshold"]["value"],
        "threshold_param": params.train.threshold,
        "as_of": params.as_of,
        "random_state": params.random_state,
        "test_size": params.prepare.test_size,
        **{f"{summary['model']}.{k}": v for k, v in summary["settings"].items()},
    }


def child_runs(summary: dict) -> list[dict]:
    """One MLflow child run per candidate of the auto search."""
    rows = (summary.get("search") or {}).get("candidates", [])
    return [
        {
            "name": row["label"],
            "params": {"model": row["model"], **{f"{row['model']}.{k}": v
                                                 for k, v in row["settings"].items()}},
            "metrics": {"roc_auc_cv_mean": row["roc_auc_cv_mean"],
                        "roc_auc_cv_std": row["roc_auc_cv_std"]},
        }
        for row in rows
    ]  # fmt: skip


def run(
    params: Params,
    prepared_dir: Path = PREPARED_DIR,
    out_dir: Path = MODELS_DIR,
    track: bool = True,
) -> Trained:
    spec_path = prepared_dir / "features.json"
    train_path = prepared_dir / "train.parquet"
    if not spec_path.exists() or not train_path.exists():
        raise ChurnError(f"{prepared_dir}: prepared data not found; run `churn prepare` first")
    spec = read_json(spec_path)
    params, basis = with_save_rate(params)
    with engine.maybe_client(params) as cluster:
        if cluster is None:
            # the model's columns only: 8 M users' ids alone are ~0.5 GB of Python strings
            train = pd.read_parquet(train_path, columns=[*feature_names(spec), spec["label"]])
            split = split_here(train, spec, params)
            del train
        else:  # the samples gathered from the workers (churn.engine)
            split = engine.training_split(cluster, train_path, spec, params)
    log.info("training on %d rows x %d features (train.model: %s)", split.rows,
             len(spec["features"]), params.train.model)  # fmt: skip
    trained = fit(split, spec, params)
    trained.summary["threshold"]["save_rate"] = {"value": params.decision.save_rate,
                                                 "basis": basis}  # fmt: skip

    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / MODEL_FILE
    contract_path = out_dir / CONTRACT_FILE
    modelfile.save(trained.model, model_path)
    write_json(contract_path, trained.contract)
    write_json(out_dir / SUMMARY_FILE, trained.summary)
    model_sha = sha256_file(model_path)
    log.info("wrote %s (sha256 %s…)", model_path, model_sha[:12])

    if track:
        tags = {
            "git_commit": tracking.git_commit(),
            "dvc_exp_name": os.environ.get("DVC_EXP_NAME", ""),
            "as_of": spec["as_of"],
            "data_sha256": sha256_file(train_path),
            tracking.MODEL_SHA_TAG: model_sha,
            "model": trained.summary["model"],
        }
        run_id = tracking.log_training_run(
            experiment=params.mlflow.experiment,
            model=trained.model,
            params=model_params(params, trained.summary),
            tags=tags,
            example=split.example,
            artifacts=[contract_path, model_path, out_dir / SUMMARY_FILE],  # the exact bytes
            children=child_runs(trained.summary),
        )
        log.info("logged MLflow run %s to %s", run_id, tracking.tracking_uri())
    return trained
