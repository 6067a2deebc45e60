"""The `churn` command: one sub-command per pipeline stage (dvc.yaml calls these)."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import typer

from churn import __version__
from churn.errors import ChurnError

app = typer.Typer(
    help="StreamFlow churn: a reproducible DVC + MLflow churn pipeline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params file", show_default=True)]
TrackOpt = Annotated[
    bool,
    typer.Option("--mlflow/--no-mlflow", help="log to MLflow (MLFLOW_TRACKING_URI or ./mlflow)"),
]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    for noisy in ("mlflow", "alembic", "urllib3", "git", "skops"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def stage(func: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command with timing, turning failures into one line and exit code 1."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        name = func.__name__.replace("registry_", "registry ")
        try:
            result = func(*args, **kwargs)
        except ChurnError as exc:
            typer.echo(f"churn {name}: error: {exc}", err=True)
            raise typer.Exit(1) from None
        except Exception as exc:  # a bug, not bad input: still one readable line
            if os.environ.get("CHURN_DEBUG"):
                raise
            typer.echo(
                f"churn {name}: unexpected {type(exc).__name__}: {exc} "
                "(set CHURN_DEBUG=1 for the traceback)",
                err=True,
            )
            raise typer.Exit(2) from None
        elapsed = time.perf_counter() - started
        logging.getLogger(f"churn.{name}").info("done in %.1f s", elapsed)
        _record_stage(name, elapsed)
        return result

    return wrapper


def _record_stage(name: str, elapsed: float) -> None:
    """Append wall time and peak RSS to $CHURN_STAGE_LOG (used by benchmarks/pipeline)."""
    target = os.environ.get("CHURN_STAGE_LOG")
    if not target:
        return
    import json
    import resource

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    with open(target, "a") as fh:
        fh.write(json.dumps({"stage": name, "wall_s": round(elapsed, 3),
                             "peak_rss_mb": round(peak_mb, 1)}) + "\n")  # fmt: skip


def _version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print version")
    ] = False,
) -> None:
    """Pipeline stages (ingest → prepare → train → evaluate) run from the repo root."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    _setup_logging(verbose)


@app.command()
@stage
def ingest(params: ParamsOpt = Path("params.yaml")) -> None:
    """Validate the source (synthetic | snapshots | table) and write data/raw/<as_of>/."""
    from churn import ingest as stage_module
    from churn.params import load_params

    stage_module.run(load_params(params))


@app.command()
@stage
def prepare(params: ParamsOpt = Path("params.yaml")) -> None:
    """Join the snapshot at as_of, split train/test, write online and drift tables."""
    from churn import prepare as stage_module
    from churn.params import load_params

    stage_module.run(load_params(params))


@app.command()
@stage
def train(params: ParamsOpt = Path("params.yaml"), mlflow: TrackOpt = True) -> None:
    """Fit the model chosen in params; write models/ and log an MLflow run."""
    from churn import train as stage_module
    from churn.params import load_params

    stage_module.run(load_params(params), track=mlflow)


@app.command()
@stage
def evaluate(params: ParamsOpt = Path("params.yaml"), mlflow: TrackOpt = True) -> None:
    """Write reports/metrics.json and plot data; log the metrics to the train run."""
    import json

    from churn import evaluate as stage_module
    from churn.params import load_params

    metrics = stage_module.run(load_params(params), track=mlflow)
    typer.echo(json.dumps(metrics, indent=2))


@app.command()
@stage
def drift(params: ParamsOpt = Path("params.yaml")) -> None:
    """Evidently drift of the current snapshot against the training one (reports/drift.*)."""
    from churn import drift as stage_module
    from churn.params import load_params

    stage_module.run(load_params(params))


@app.command()
@stage
def promote(
    params: ParamsOpt = Path("params.yaml"),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="decide and report; touch no registry or alias")
    ] = False,
) -> None:
    """Gate the candidate against the champion; on pass move the `champion` alias."""
    from churn import promote as stage_module
    from churn.params import load_params

    stage_module.run(load_params(params), dry_run=dry_run)


@app.command()
@stage
def rollback(
    reason: Annotated[str, typer.Option("--reason", help="why (recorded in history)")],
    to: Annotated[
        str | None, typer.Option("--to", help="version (default: the previous champion)")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Move the `champion` alias and registry/champion.json back to another version."""
    from churn import registry as reg
    from churn.params import load_params

    entry = reg.rollback(load_params(params).promote.model_name, to, reason)
    typer.echo(f"champion is now version {entry['version']} (sha256 {entry['sha256'][:12]}…)")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Serve the registry's champion over HTTP (FastAPI + uvicorn).

    Configuration comes from the environment: CHURN_ADMIN_TOKEN (enables
    POST /admin/reload), CHURN_CANARY_FRACTION, CHURN_SHADOW, CHURN_POLL_SECONDS,
    CHURN_MAX_BATCH, CHURN_REGISTRY_DIR, CHURN_FEATURES.
    """
    # One OpenMP thread per worker: a threaded server on 2 cores oversubscribes otherwise.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import uvicorn

    uvicorn.run(
        "churn.serve:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,  # churn.access logs one structured line per request
    )


registry_app = typer.Typer(help="Inspect and check the model registry.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")


@registry_app.command("show")
@stage
def registry_show(params: ParamsOpt = Path("params.yaml"), last: int = 5) -> None:
    """Champion, challenger and the last decisions."""
    import json

    from churn import registry as reg
    from churn import tracking
    from churn.params import load_params

    name = load_params(params).promote.model_name
    champion = reg.read_champion()
    if champion is None:
        typer.echo("no champion yet: run `dvc repro`")
    else:
        keys = ("model_name", "version", "sha256", "as_of", "model", "decided_at", "reason")
        typer.echo(json.dumps({k: champion.get(k) for k in keys}, indent=2))
        typer.echo(f"metrics: {json.dumps(champion.get('metrics', {}))}")
    typer.echo(f"challenger version: {tracking.alias_version(name, reg.CHALLENGER)}")
    for record in reg.read_history()[-last:]:
        typer.echo(f"{record['at']}  {record['action']:<8} {record.get('version_before')} -> "
                   f"{record.get('version_after')}  {record.get('reason', '')}")  # fmt: skip


@registry_app.command("history")
@stage
def registry_history() -> None:
    """Every promote, skip, rollback and repair, oldest first (JSON lines)."""
    import json

    from churn import registry as reg

    for record in reg.read_history():
        typer.echo(json.dumps(record))


@registry_app.command("verify")
@stage
def registry_verify(
    params: ParamsOpt = Path("params.yaml"),
    repair: Annotated[
        bool, typer.Option("--repair", help="move the alias to match the file")
    ] = False,
) -> None:
    """Check champion.json, the MLflow alias and the artifact sha256 agree."""
    from churn import registry as reg
    from churn.errors import ChurnError
    from churn.params import load_params

    problems = reg.verify(load_params(params).promote.model_name, repair=repair)
    for problem in problems:
        typer.echo(f"- {problem}")
    unresolved = [p for p in problems if not p.endswith("(repaired)")]
    if unresolved:
        raise ChurnError(f"{len(unresolved)} registry problem(s), listed above")
    typer.echo("registry ok: champion.json, alias and artifact agree")


if __name__ == "__main__":  # pragma: no cover
    app()
