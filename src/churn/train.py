"""train: fit the Pipeline, write models/, log the MLflow run."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn.pipeline import Pipeline

from churn import modelfile, tracking
from churn.errors import ChurnError
from churn.io import read_json, sha256_file, write_json
from churn.model import build_pipeline, feature_contract, feature_names, fit_pipeline
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


def fit(train: pd.DataFrame, spec: dict, params: Params) -> Trained:
    """Pure: a fitted Pipeline and its feature contract."""
    names = feature_names(spec)
    pipeline = build_pipeline(spec, params.train, params.random_state)
    fit_pipeline(pipeline, train[names], train[spec["label"]].astype(int))
    contract = feature_contract(spec, train, params.train.model, params.train.threshold)
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
