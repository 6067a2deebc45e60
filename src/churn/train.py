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

from churn import modelfile, tracking
from churn.errors import ChurnError
from churn.io import read_json, sha256_file, write_json
from churn.model import (
    build_pipeline,
    capped_columns,
    feature_contract,
    feature_names,
    fit_pipeline,
)
from churn.params import Params
from churn.prepare import PREPARED_DIR

log = logging.getLogger("churn.train")

MODELS_DIR = Path("models")
MODEL_FILE = modelfile.MODEL_FILE
CONTRACT_FILE = "feature_contract.json"


@dataclass(frozen=True)
class Trained:
    model: Pipeline
    contract: dict


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


def fit(train: pd.DataFrame, spec: dict, params: Params) -> Trained:
    """Pure: a fitted Pipeline and its feature contract; refuses features that leak."""
    leaks = leaky_features(train, spec, params.train.allow_leaky)
    if leaks:
        shown = ", ".join(f"'{n}' (AUC {a:.3f} alone)" for n, a in sorted(leaks.items()))
        raise ChurnError(
            f"{shown} predict the label almost perfectly on the training split: a leak (a "
            "column known only after churn)? Leave it out with ingest.table.drop_columns "
            "(or ingest.snapshots.drop_columns), or accept it with train.allow_leaky"
        )
    names = feature_names(spec)
    capped = capped_columns(spec, train, params.train.max_categories)
    for name in capped:
        log.info("'%s': %d levels; the %d most frequent are kept, the rest are 'infrequent'",
                 name, train[name].nunique(), params.train.max_categories - 1)  # fmt: skip
    pipeline = build_pipeline(spec, params.train, params.random_state, capped)
    fit_pipeline(pipeline, train[names], train[spec["label"]].astype(int))
    contract = feature_contract(spec, train, params.train.model, params.train.threshold,
                                tuple(capped))  # fmt: skip
    return Trained(pipeline, contract)


def model_params(params: Params) -> dict[str, object]:
    """Flat params for MLflow: the chosen estimator's hyper-parameters and the data pins."""
    chosen = getattr(params.train, params.train.model).model_dump()
    return {
        "model": params.train.model,
        "class_weight": params.train.class_weight,
        "threshold": params.train.threshold,
        "as_of": params.as_of,
        "random_state": params.random_state,
        "test_size": params.prepare.test_size,
        **{f"{params.train.model}.{k}": v for k, v in chosen.items()},
    }


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
    train = pd.read_parquet(train_path)
    log.info(
        "fitting %s on %d rows x %d features", params.train.model, len(train), len(spec["features"])
    )
    trained = fit(train, spec, params)

    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / MODEL_FILE
    contract_path = out_dir / CONTRACT_FILE
    modelfile.save(trained.model, model_path)
    write_json(contract_path, trained.contract)
    model_sha = sha256_file(model_path)
    log.info("wrote %s (sha256 %s…)", model_path, model_sha[:12])

    if track:
        tags = {
            "git_commit": tracking.git_commit(),
            "dvc_exp_name": os.environ.get("DVC_EXP_NAME", ""),
            "as_of": spec["as_of"],
            "data_sha256": sha256_file(train_path),
            tracking.MODEL_SHA_TAG: model_sha,
            "model": params.train.model,
        }
        names = feature_names(spec)
        run_id = tracking.log_training_run(
            experiment=params.mlflow.experiment,
            model=trained.model,
            params=model_params(params),
            tags=tags,
            example=train[names].head(100),
            artifacts=[contract_path, model_path],  # the exact bytes promote and serving use
        )
        log.info("logged MLflow run %s to %s", run_id, tracking.tracking_uri())
    return trained
