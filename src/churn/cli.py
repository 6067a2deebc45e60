"""The `churn` command: one sub-command per pipeline stage (dvc.yaml calls these)."""

from __future__ import annotations

import logging
import os
import signal
import socket
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
    # plain click help: typer's rich panels print flags as `--dry-run <bool>`, which reads
    # as if a value were expected (and `--dry-run true` is then refused)
    rich_markup_mode=None,
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
    for noisy in ("mlflow", "alembic", "urllib3", "git", "skops", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def stage(func: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command with timing, turning failures into one line and exit code 1."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        name = func.__name__
        for group in ("registry", "params", "team"):
            name = name.replace(f"{group}_", f"{group} ")
        _pin_threads()
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


# One BLAS/OpenMP thread everywhere: a stage's bytes and verdicts must not depend on the
# core count, OMP_NUM_THREADS or a busy CPU (OpenMP threads spin-wait under load), and a
# threaded server oversubscribes two cores with more. The variables cover libraries
# loaded later; threadpoolctl the ones already loaded.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _pin_threads() -> None:
    for variable in THREAD_VARIABLES:
        os.environ[variable] = "1"
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _record_stage(name: str, elapsed: float) -> None:
    """Append wall time and peak RSS to $CHURN_STAGE_LOG (used by benchmarks/pipeline)."""
    target = os.environ.get("CHURN_STAGE_LOG")
    if not target:
        return
    import json
    import resource

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    record = {"stage": name, "wall_s": round(elapsed, 3), "peak_rss_mb": round(peak_mb, 1)}
    engine = sys.modules.get("churn.engine")  # the stage ran on a dask cluster
    if engine is not None and engine.worker_peaks_mb:
        record["worker_peak_rss_mb"] = list(engine.worker_peaks_mb.values())
    with open(target, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def _version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print version")
    ] = False,
) -> None:
    """Pipeline stages (ingest → prepare → decide → train → evaluate → drift → promote →
    score) run
    from the repo root."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    if ctx.invoked_subcommand != "serve":
        import signal

        # `churn registry show | head` ends quietly. Never in the server: there SIGPIPE's
        # default action would kill the process whenever a client hangs up mid-answer.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
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
def decide(params: ParamsOpt = Path("params.yaml")) -> None:
    """The save rate this month's decisions use (reports/decision.json): decision.save_rate,
    or with `measured` the last campaign measurement before the newest month."""
    from churn import campaign
    from churn.params import load_params

    campaign.decide(load_params(params))


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
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="decide even when the champion's model file is absent, "
            "corrupt or unsafe, against its recorded metrics",
        ),
    ] = False,
) -> None:
    """Gate the candidate against the champion; on pass move the `champion` alias."""
    from churn import promote as stage_module
    from churn.params import load_params

    stage_module.run(load_params(params), dry_run=dry_run, repair=repair)


@app.command()
@stage
def score(
    params: ParamsOpt = Path("params.yaml"),
    top: Annotated[
        int | None, typer.Option("--top", min=1, help="then print the N users most likely to churn")
    ] = None,
    csv: Annotated[bool, typer.Option("--csv", help="print the call list as CSV")] = False,
) -> None:
    """Score every user of the newest snapshot with the champion (data/scored/, scoring.json).

    `churn score --top 500 --csv > calls.csv` writes this month's call list: user id,
    calibrated churn probability, decision, expected value of an offer, rank, decile,
    reasons. The control group (decision.control_share of the users over the threshold) is
    not in it: `churn campaign` compares the two once the month's outcomes are known.
    """
    from churn import score as stage_module
    from churn.params import load_params

    report = stage_module.run(load_params(params))
    if top is None:
        return
    if report is None:
        raise ChurnError(
            "nothing scored: no champion in this lineage, or every user left out "
            "(reports/scoring.json says which)"
        )
    calls = stage_module.call_list(Path(report["file"]), top)
    if csv:
        calls.to_csv(sys.stdout, index=False)
    else:
        typer.echo(calls.to_string(index=False))


@app.command()
@stage
def publish(
    params: ParamsOpt = Path("params.yaml"),
    features: Annotated[
        Path | None,
        typer.Option(
            "--features",
            help="an online table (parquet with user_id) to publish instead of "
            "data/prepared's (a backfill, a load test)",
        ),
    ] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="its snapshot date (default: prepare's)")
    ] = None,
) -> None:
    """Load the online features into PostgreSQL for the lineage (CHURN_ONLINE_DSN).

    `dvc repro` does this in promote when `serve.online_store: postgres`; this command
    loads a table by hand. Replicas with CHURN_ONLINE_STORE=postgres follow on their next
    reload (POST /admin/reload or CHURN_POLL_SECONDS)."""
    import json

    from churn import online, promote, registry
    from churn.params import load_params
    from churn.prepare import PREPARED_DIR

    lineage = registry.lineage_dir(load_params(params).promote.model_name).name
    published = promote.publish_online_table(PREPARED_DIR, lineage,
                                             online.dsn_from_env("churn publish"), features,
                                             as_of)  # fmt: skip
    typer.echo(json.dumps(published, indent=2))


@app.command()
@stage
def campaign(
    params: ParamsOpt = Path("params.yaml"),
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="the scored month (default: the newest)")
    ] = None,
    contacts: Annotated[
        Path | None,
        typer.Option(
            "--contacts",
            help="CSV/parquet of the user ids actually called that "
            "month (default: the call list was worked)",
        ),
    ] = None,
    record: Annotated[
        bool, typer.Option("--record/--no-record", help="add it to campaigns/<lineage>.json")
    ] = True,
) -> None:
    """Did the offer work? Churn among the users called vs the control group of a scored
    month, once its outcomes are ingested: the save rate with a 95 % interval and the money
    it implies (reports/campaign.json, reports/campaign.png, campaigns/<lineage>.json).

    With `decision.save_rate: measured` the next months' decisions use it (`dvc repro`)."""
    import json

    from churn import campaign as stage_module
    from churn.params import load_params

    report = stage_module.run(load_params(params), as_of, contacts, save=record)
    typer.echo(json.dumps({k: report[k] for k in ("latest", "pooled", "next_months_save_rate")},
                          indent=2))  # fmt: skip


@app.command()
@stage
def rollback(
    reason: Annotated[str, typer.Option("--reason", help="why (recorded in history)")],
    to: Annotated[
        str | None, typer.Option("--to", help="version (default: the previous champion)")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Move the `champion` alias and registry/<name>/champion.json back to another version."""
    from churn import registry as reg
    from churn.params import load_params
    from churn.promote import note_rollback

    entry = reg.rollback(load_params(params).promote.model_name, to, reason)
    note_rollback(entry)
    typer.echo(f"champion is now version {entry['version']} (sha256 {entry['sha256'][:12]}…)")


@app.command()
@stage
def monitor(
    params: ParamsOpt = Path("params.yaml"),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="check every month and report; change nothing")
    ] = False,
) -> None:
    """The closed loop over snapshots newer than the champion's as_of.

    Per month: drift and ROC AUC of the champion against it; when retraining is
    recommended, set as_of to that month and `dvc repro` (promote's gates decide).
    Writes reports/monitor/{timeline.json,timeline.png,report.html,summary.md}.
    """
    from churn import monitor as stage_module

    timeline = stage_module.run(params, dry_run=dry_run)
    table = stage_module.steps_frame(timeline)
    typer.echo(table.to_string(index=False) if len(table) else "no month newer than the champion")
    typer.echo(f"{timeline['retrains']} retrain(s), {timeline['promotions']} promotion(s); "
               f"champion v{timeline['end_champion']['version']}"
               + (" (dry run: nothing changed)" if dry_run else ""))  # fmt: skip


@app.command()
@stage
def gate(
    metrics: Annotated[
        Path, typer.Option(help="metrics to check (the evaluate stage's output)")
    ] = Path("reports/metrics.json"),
    baseline: Annotated[Path | None, typer.Option(help="compare with this metrics file…")] = None,
    rev: Annotated[
        str | None,
        typer.Option(help="…or with reports/metrics.json at this git revision, e.g. main"),
    ] = None,
    md: Annotated[bool, typer.Option("--md", help="GitHub markdown (for a PR comment)")] = False,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Fail (exit 1) when a metric is missing, breaks its floor or regresses too far.

    Rules per metric live under `gate.metrics` in params.yaml (tolerance, relative,
    min, max, optional); roc_auc and pr_auc take their floors from promote.min_*. An ECE
    ceiling rises to twice the noise floor of a small test split (evaluation.json).
    """
    from churn import gate as stage_module
    from churn.params import load_params

    if baseline is not None and rev is not None:
        raise ChurnError("give --baseline or --rev, not both")
    current = stage_module.read_metrics(metrics)
    before, name = None, None
    if baseline is not None:
        before, name = stage_module.read_metrics(baseline), str(baseline)
    elif rev is not None:
        before, name = stage_module.metrics_at_rev(rev, metrics), rev
        if before is None:
            typer.echo(f"note: {metrics} does not exist at {rev}; checking limits only", err=True)
            name = None
    checks = stage_module.run_gate(load_params(params), current, before, str(metrics), str(name),
                                   stage_module.noise_floors(metrics))  # fmt: skip
    typer.echo(stage_module.render(checks, name, markdown=md), nl=False)
    failed = [c.metric for c in checks if c.verdict == stage_module.FAIL]
    if failed:
        raise ChurnError(f"{len(failed)} of {len(checks)} metrics failed: {', '.join(failed)}")


params_app = typer.Typer(
    help="Read and change params.yaml.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(params_app, name="params")


@params_app.command("set")
@stage
def params_set(
    assignments: Annotated[
        list[str], typer.Argument(help="KEY=VALUE, dotted keys, e.g. as_of=2024-04-30")
    ],
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Change params.yaml in place (comments kept), like `dvc exp run -S` but for `dvc repro`.

    The new file is validated before it is written: an unknown key or a bad value
    leaves it untouched. Dates stay quoted strings.
    """
    from churn.params import parse_assignments, update_params_file

    updates = parse_assignments(assignments)
    update_params_file(params, updates)
    for key, value in updates.items():
        typer.echo(f"{key} = {value!r}")


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
    CHURN_MAX_BATCH, CHURN_REGISTRY_DIR (registry root), CHURN_MODEL_NAME (lineage; default:
    params.yaml's promote.model_name), CHURN_FEATURES.
    """
    import shutil
    import tempfile

    import uvicorn

    # One OpenMP thread per worker: a threaded server on 2 cores oversubscribes otherwise.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # Shared by this server's workers (set before they import prometheus_client): reload
    # announcements, and the metric files /metrics sums over every worker.
    run_dir = Path(tempfile.mkdtemp(prefix="churn-serve-"))
    (run_dir / "metrics").mkdir()
    os.environ["CHURN_RUN_DIR"] = str(run_dir)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(run_dir / "metrics")
    # imported after that variable: churn.serving loads prometheus_client, which reads it once
    from churn.serving.protocol import BoundedHeadProtocol

    options = dict(
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,  # churn.access logs one structured line per request
        # asyncio's loop, not uvloop: under overload uvloop served some connections a
        # quarter less often than others (64 connections, one worker: the least-served
        # got 67-88 % of the mean answers, asyncio 98-99 %) and the c=64 p99 was 10-20x
        # p50; the same p50 and throughput on both (benchmarks/serving)
        loop=SERVE_LOOP,
        http=BoundedHeadProtocol,  # httptools with a 431 past CHURN_MAX_HEADER_BYTES
    )
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; with the default
    # action that killed the process before `finally` removed run_dir (/tmp/churn-serve-*
    # piled up). As an exception it unwinds through `finally`, then exits 128 + signal.
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, _exit_on_signal)
    try:
        if workers == 1:
            uvicorn.run("churn.serve:create_app", **options)
        else:  # uvicorn.run's multiprocess branch, a listening socket per worker
            _workers(uvicorn.Config("churn.serve:create_app", **options)).run()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


SERVE_LOOP = "asyncio"


def _exit_on_signal(number: int, frame: Any) -> None:
    raise SystemExit(128 + number)


def worker_listener(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """One worker's own listening socket: SO_REUSEPORT, so the kernel spreads connections
    over the workers by a hash of each connection, and proto IPPROTO_TCP, so asyncio sets
    TCP_NODELAY on what it accepts. uvicorn's --workers shares one socket bound with proto 0:
    Nagle held every keep-alive answer for the client's delayed ACK (~44 ms each,
    Kludex/uvicorn#3149), and whichever worker woke first accepted a whole burst of
    connections (wrk's 64 often all on one worker: 0.4-2.1x one worker's req/s)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


def _workers(config: Any) -> Any:
    """uvicorn's supervisor (restarts, health checks, signals) handing each worker process
    it starts a socket of its own (`worker_listener`)."""
    from uvicorn.supervisors import Multiprocess

    class Workers(Multiprocess):
        def keep_subprocess_alive(self) -> None:
            """uvicorn's restart of a dead worker, then its live gauges dropped from the
            metric files (/metrics listed a dead worker's churn_model_info)."""
            from prometheus_client import multiprocess

            before = {process.pid for process in self.processes}
            super().keep_subprocess_alive()
            for pid in before - {process.pid for process in self.processes}:
                multiprocess.mark_process_dead(pid)

        @property
        def sockets(self) -> list[socket.socket]:  # read once per worker started
            return [worker_listener(config.host, config.port, config.backlog)]

        @sockets.setter
        def sockets(self, value: list[socket.socket]) -> None:
            pass

    return Workers(config, sockets=[])


registry_app = typer.Typer(
    help="Inspect and check the model registry.", no_args_is_help=True, rich_markup_mode=None
)
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
    lineage = reg.lineage_dir(name)
    champion = reg.read_champion(lineage)
    if champion is None:
        typer.echo("no champion yet: run `dvc repro`")
    else:
        keys = ("model_name", "version", "sha256", "as_of", "model", "decided_at", "reason")
        shown = {k: champion.get(k) for k in keys}
        local = reg.local_lineage(name, champion)
        # the run in this store holding the champion's bytes resolves with `mlflow runs
        # describe`; the deciding machine's run may live in another store
        shown["run_id"] = local["run_id"]
        shown["local_version"] = local["version"]
        shown["decided_in_run"] = champion["run_id"]
        shown["tracking_uri"] = local["tracking_uri"]
        typer.echo(json.dumps(shown, indent=2))
        if local["run_id"] is None:
            typer.echo("run_id: no run in this store holds the champion's bytes; run `dvc "
                       "repro` (promote restores it)")  # fmt: skip
        typer.echo(f"metrics: {json.dumps(champion.get('metrics', {}))}")
    typer.echo(f"challenger version: {tracking.alias_version(name, reg.CHALLENGER)}")
    for record in reg.read_history(lineage)[-last:]:
        typer.echo(f"{record['at']}  {record['action']:<8} {record.get('version_before')} -> "
                   f"{record.get('version_after')}  {record.get('reason', '')}")  # fmt: skip


@registry_app.command("history")
@stage
def registry_history(params: ParamsOpt = Path("params.yaml")) -> None:
    """Every promote, skip, rollback and repair, oldest first (JSON lines)."""
    import json

    from churn import registry as reg
    from churn.params import load_params

    for record in reg.read_history(reg.lineage_dir(load_params(params).promote.model_name)):
        typer.echo(json.dumps(record))


@registry_app.command("verify")
@stage
def registry_verify(
    params: ParamsOpt = Path("params.yaml"),
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="move the alias to match the file; write a history record a crash left out",
        ),
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


team_app = typer.Typer(
    help="Team mode: a shared MLflow server on PostgreSQL, DVC push/pull with sizes.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(team_app, name="team")
TeamDirOpt = Annotated[Path, typer.Option("--dir", help="state folder (git-ignored)")]


@team_app.command("up")
@stage
def team_up(
    team_dir: TeamDirOpt = Path(".team"),
    host: Annotated[str, typer.Option(help="the MLflow server's address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="the MLflow server's port")] = 5000,
    pg_port: Annotated[int, typer.Option(help="PostgreSQL's port (on 127.0.0.1)")] = 5433,
    timeout: Annotated[float, typer.Option(help="seconds to wait for /health")] = 180.0,
) -> None:
    """Start PostgreSQL and `mlflow server` (proxied artifacts); print the tracking URI.

    Progress goes to stderr, the `export MLFLOW_TRACKING_URI=...` and `export
    CHURN_ONLINE_DSN=...` lines to stdout, so `eval "$(churn team up)"` points this shell
    at the server and at the online store (`serve.online_store: postgres`).
    """
    from churn import team

    started = team.up(team_dir, host, port, pg_port, timeout)
    typer.echo(f"export MLFLOW_TRACKING_URI={started.uri}")
    typer.echo(f"export CHURN_ONLINE_DSN={started.online_dsn}")


@team_app.command("down")
@stage
def team_down(team_dir: TeamDirOpt = Path(".team")) -> None:
    """Stop the MLflow server and PostgreSQL that `churn team up` started (data kept)."""
    from churn import team

    stopped = team.down(team_dir)
    typer.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@team_app.command("push", context_settings={"allow_extra_args": True,
                                            "ignore_unknown_options": True})  # fmt: skip
@stage
def team_push(ctx: typer.Context) -> None:
    """`dvc push` (extra arguments passed on), saying how many files and MB it moves."""
    from churn import team

    team.transfer("push", list(ctx.args))


@team_app.command("pull", context_settings={"allow_extra_args": True,
                                            "ignore_unknown_options": True})  # fmt: skip
@stage
def team_pull(ctx: typer.Context) -> None:
    """`dvc pull` (extra arguments passed on), saying how many files and MB it moves."""
    from churn import team

    team.transfer("pull", list(ctx.args))


if __name__ == "__main__":  # pragma: no cover
    app()
