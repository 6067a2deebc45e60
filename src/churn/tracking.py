"""Every MLflow call of the project lives here.

The tracking URI is `MLFLOW_TRACKING_URI` when set, else an embedded SQLite store
under the git-ignored `mlflow/` folder of the repo (never a DVC out). Queued and
`--temp` experiments run in a copy of the repo under .dvc/tmp/; DVC sets DVC_ROOT to
the real repo there, so their runs land in the same store as every other run.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

MLFLOW_DIR = Path("mlflow")
MODEL_SHA_TAG = "model_sha256"
LOGGED_MODEL_TAG = "logged_model_uri"  # models:/m-… of the run's MLflow 3 logged model


def disable_telemetry() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")


def store_dir() -> Path:
    """The repo's mlflow/ folder: under DVC_ROOT when DVC runs the command, else here."""
    root = os.environ.get("DVC_ROOT")
    return Path(root) / MLFLOW_DIR if root else MLFLOW_DIR


def embedded_uri() -> str:
    return f"sqlite:///{(store_dir() / 'mlflow.db').resolve()}"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or embedded_uri()


def is_shared() -> bool:
    """A tracking server (team mode): artifacts travel through it, so other machines can
    fetch what this one logged."""
    return tracking_uri().startswith(("http://", "https://"))


def _client():
    disable_telemetry()
    import mlflow

    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return mlflow


def ensure_experiment(name: str) -> str:
    """The experiment's id; local artifacts go under mlflow/artifacts for the embedded store."""
    mlflow = _client()
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    # not `"MLFLOW_TRACKING_URI" in os.environ`: mlflow.set_tracking_uri sets that variable
    if tracking_uri() == embedded_uri():
        location = (store_dir() / "artifacts").resolve().as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("scikit-learn", "numpy", "pandas", "scipy")]


def log_training_run(
    *,
    experiment: str,
    model: Pipeline,
    params: dict[str, Any],
    tags: dict[str, str],
    example: pd.DataFrame,
    artifacts: list[Path],
    children: list[dict] | None = None,
) -> str:
    """Log params, tags, the model (skops, signature, input example) and files, and one
    nested run per `children` entry (name, params, metrics); return the run id."""
    mlflow = _client()
    import skops.io
    from mlflow.models import infer_signature
    from mlflow.sklearn import log_model

    experiment_id = ensure_experiment(experiment)
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    signature = infer_signature(example, model.predict_proba(example)[:, 1])
    run_name = tags.get("dvc_exp_name") or None
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.log_params(params)
        mlflow.set_tags(tags)
        info = log_model(
            sk_model=model,
            name="model",
            signature=signature,
            input_example=example.head(3),
            pip_requirements=_pip_requirements(),
            serialization_format="skops",
            skops_trusted_types=trusted,
            pyfunc_predict_fn="predict_proba",
        )
        mlflow.set_tag(LOGGED_MODEL_TAG, info.model_uri)
        for path in artifacts:
            mlflow.log_artifact(str(path))
        for child in children or []:
            with mlflow.start_run(experiment_id=experiment_id, run_name=child["name"],
                                  nested=True):  # fmt: skip
                mlflow.log_params(child["params"])
                mlflow.log_metrics(child["metrics"])
                mlflow.set_tag("parent_model_sha256", tags.get(MODEL_SHA_TAG, ""))
        return run.info.run_id


def find_run_by_model_sha(experiment: str, sha256: str) -> str | None:
    """The newest run whose logged model has this sha256 (how evaluate finds train's run)."""
    mlflow = _client()
    experiment_obj = mlflow.get_experiment_by_name(experiment)
    if experiment_obj is None:
        return None
    runs = mlflow.search_runs(
        experiment_ids=[experiment_obj.experiment_id],
        filter_string=f"tags.{MODEL_SHA_TAG} = '{sha256}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return runs[0].info.run_id if runs else None


def log_metrics(run_id: str, metrics: dict[str, float], artifacts: list[Path]) -> None:
    mlflow = _client()
    client = mlflow.MlflowClient()
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value))
    for path in artifacts:
        client.log_artifact(run_id, str(path))


# --- model registry ---------------------------------------------------------------


def run_summary(run_id: str) -> dict[str, Any]:
    """Metrics, tags and artifact URI of a run."""
    client = _client().MlflowClient()
    run = client.get_run(run_id)
    return {
        "run_id": run_id,
        "metrics": dict(run.data.metrics),
        "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
        "artifact_uri": run.info.artifact_uri,
    }


def find_version_by_sha(name: str, sha256: str) -> str | None:
    """The newest registered version of `name` whose model sha256 tag matches."""
    client = _client().MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except Exception:  # the registered model does not exist yet
        return None
    matching = [v for v in versions if v.tags.get(MODEL_SHA_TAG) == sha256]
    if not matching:
        return None
    return str(max(int(v.version) for v in matching))


def register_version(name: str, run_id: str, tags: dict[str, str], at_least: int = 1) -> str:
    """Register the run's logged model as a new version, numbered `at_least` or higher;
    return it.

    MLflow numbers versions per store (the next is the highest + 1), while the lineage's
    numbers live in git (registry/<name>/): a clone's fresh store would call the committed
    version 2 "1". Placeholder versions, deleted right after, lift the number to the
    lineage's. MLflow 3 keeps a logged model outside the run's artifacts: registering its
    models:/m-… URI (tagged on the run by train) avoids MLflow's "no artifacts at artifact
    path" detour through runs:/, and `models:/<name>@champion` loads.
    """
    mlflow = _client()
    client = mlflow.MlflowClient()
    source = client.get_run(run_id).data.tags.get(LOGGED_MODEL_TAG) or f"runs:/{run_id}/model"
    try:
        highest = max((int(v.version) for v in client.search_model_versions(f"name = '{name}'")),
                      default=0)  # fmt: skip
    except Exception:  # the registered model does not exist yet
        highest = 0
    if highest == 0:
        try:
            client.get_registered_model(name)
        except mlflow.exceptions.MlflowException:
            client.create_registered_model(name)
    # the client, not mlflow.register_model: that prints two lines per version (eight for
    # a clone restoring version 4), where the caller says in one line what happened
    model_id = source.removeprefix("models:/") if source.startswith("models:/m-") else None

    def create(version_tags: dict[str, str]) -> str:
        return str(client.create_model_version(name, source, run_id=run_id, tags=version_tags,
                                               model_id=model_id).version)  # fmt: skip

    placeholders = [create({"placeholder": "numbering"}) for _ in range(highest + 1, at_least)]
    version = create(tags)
    for held in placeholders:
        client.delete_model_version(name, held)
    return version


def version_summary(name: str, version: str) -> dict[str, Any] | None:
    client = _client().MlflowClient()
    try:
        v = client.get_model_version(name, version)
    except Exception:
        return None
    return {"version": str(v.version), "run_id": v.run_id, "tags": dict(v.tags)}


def alias_version(name: str, alias: str) -> str | None:
    client = _client().MlflowClient()
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except Exception:
        return None


def set_alias(name: str, alias: str, version: str) -> None:
    _client().MlflowClient().set_registered_model_alias(name, alias, version)


def log_artifacts(run_id: str, paths: list[Path], artifact_path: str) -> None:
    """Upload files into <artifact_path>/ of a run (replacing files of the same name)."""
    client = _client().MlflowClient()
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path)


def download_artifact(artifact_uri: str, dst: Path) -> Path:
    """Fetch one artifact or folder (runs:/<id>/model.skops, runs:/<id>/online) into dst;
    return the local path."""
    mlflow = _client()
    dst.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(dst)))
