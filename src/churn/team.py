"""Team mode on one host: PostgreSQL + `mlflow server` with proxied artifacts, and DVC
push/pull that say how much they move.

`churn team up` (scripts/team-up) initialises a PostgreSQL cluster in an ignored folder
(.team/ by default), starts it on 127.0.0.1, creates the `mlflow` database, starts
`mlflow server --backend-store-uri postgresql+psycopg://… --artifacts-destination …` (so
clients upload and download artifacts through the server and never see its paths), waits
for /health and prints the tracking URI. `churn team down` stops both. Re-running `up` on
a running pair only prints the URI.

PostgreSQL refuses to run as root: as root its commands run as the `postgres` user
(runuser), and its data folder moves to /tmp when that user cannot reach the team folder
(a clone under /root, say).
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from churn.errors import ChurnError

log = logging.getLogger("churn.team")

TEAM_DIR = Path(".team")
STATE_FILE = "team.json"
DATABASE = "mlflow"
ONLINE_DATABASE = "online"  # the online feature tables (serve.online_store: postgres)


@dataclass(frozen=True)
class Team:
    """Where the pair lives and listens (written to <dir>/team.json by `up`)."""

    dir: str
    host: str = "127.0.0.1"  # the MLflow server's address (PostgreSQL stays on 127.0.0.1)
    port: int = 5000
    pg_port: int = 5433
    pg_data: str = ""

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def backend_uri(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.pg_port}/{DATABASE}"

    @property
    def online_dsn(self) -> str:
        """CHURN_ONLINE_DSN of the team's online store (churn.online)."""
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/{ONLINE_DATABASE}"


def pg_command(name: str) -> str:
    """A PostgreSQL server binary: on PATH, else Debian's /usr/lib/postgresql/<v>/bin."""
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise ChurnError(f"PostgreSQL's `{name}` is not installed (scripts/install-system "
                         "installs the server binaries with apt)")  # fmt: skip
    return found


def as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL's server commands refuse root: run them as the `postgres` user there."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def _run(command: list[str], what: str, timeout: float = 120) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ChurnError(f"{what}: no answer in {timeout:.0f} s ({' '.join(command)})") from None
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise ChurnError(f"{what} failed: {' | '.join(tail)}")
    return result.stdout


def _pg_data_dir(team_dir: Path) -> Path:
    """<team>/pg, or a /tmp folder when the postgres user cannot reach the team folder."""
    wanted = (team_dir / "pg").resolve()
    if os.geteuid() != 0:
        return wanted
    wanted.mkdir(parents=True, exist_ok=True)
    shutil.chown(wanted, "postgres", "postgres")
    os.chmod(wanted, 0o700)
    if subprocess.run(as_postgres(["test", "-w", str(wanted)])).returncode == 0:
        return wanted
    digest = hashlib.sha256(str(wanted).encode()).hexdigest()[:12]
    fallback = Path("/tmp") / f"churn-team-{digest}" / "pg"
    fallback.mkdir(parents=True, exist_ok=True)
    for path in (fallback.parent, fallback):
        shutil.chown(path, "postgres", "postgres")
    os.chmod(fallback, 0o700)
    log.info("the postgres user cannot reach %s; PostgreSQL's data goes to %s", wanted, fallback)
    return fallback


def _port_taken(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def read_state(team_dir: Path) -> Team | None:
    path = team_dir / STATE_FILE
    if not path.exists():
        return None
    return Team(**json.loads(path.read_text()))


def healthy(uri: str, timeout: float = 2.0) -> bool:
    import httpx

    try:
        return httpx.get(f"{uri}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def wait_healthy(uri: str, timeout_s: float, alive=lambda: True, log_path: Path | None = None,
                 what: str = "MLflow server") -> float:  # fmt: skip
    """Poll <uri>/health until 200, saying every 5 s how long it has waited; the seconds."""
    started = time.monotonic()
    said = 0.0
    while not healthy(uri):
        waited = time.monotonic() - started
        if not alive() or waited > timeout_s:
            tail = ""
            if log_path is not None and log_path.exists():
                tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
            reason = "exited" if not alive() else f"did not answer in {timeout_s:.0f} s"
            raise ChurnError(f"{what} at {uri} {reason}; its log ({log_path}):\n{tail}")
        if waited - said >= 5:
            said = waited
            log.info("waiting for %s at %s/health (%.0f s of %.0f s)", what, uri, waited,
                     timeout_s)  # fmt: skip
        time.sleep(0.3)
    return time.monotonic() - started


def up(team_dir: Path = TEAM_DIR, host: str = "127.0.0.1", port: int = 5000,
       pg_port: int = 5433, timeout_s: float = 180.0) -> Team:  # fmt: skip
    """Start (or find running) PostgreSQL + MLflow server; the running pair."""
    team_dir = team_dir.resolve()
    running = read_state(team_dir)
    if running is not None and healthy(running.uri):
        log.info("already running: %s", running.uri)
        return running
    team_dir.mkdir(parents=True, exist_ok=True)
    (team_dir / ".gitignore").write_text("*\n")
    for what, h, p in (("MLflow server", host, port), ("PostgreSQL", "127.0.0.1", pg_port)):
        if _port_taken(h, p):
            raise ChurnError(f"{h}:{p} is already in use, so the {what} cannot listen there "
                             "(another server?); pass another port")  # fmt: skip
    started = time.monotonic()
    pg_data = _pg_data_dir(team_dir)
    team = Team(str(team_dir), host, port, pg_port, str(pg_data))
    if not (pg_data / "PG_VERSION").exists():
        log.info("[1/4] initdb %s", pg_data)
        _run(as_postgres([pg_command("initdb"), "-D", str(pg_data), "-U", "postgres", "-A",
                          "trust", "-E", "UTF8", "--no-sync"]), "initdb")  # fmt: skip
    else:
        log.info("[1/4] PostgreSQL cluster exists: %s", pg_data)
    log.info("[2/4] starting PostgreSQL on 127.0.0.1:%d", pg_port)
    options = f"-p {pg_port} -k {pg_data} -c listen_addresses=127.0.0.1"
    _run(as_postgres([pg_command("pg_ctl"), "-D", str(pg_data), "-l", str(pg_data / "server.log"),
                      "-o", options, "-w", "-t", "60", "start"]), "pg_ctl start")  # fmt: skip
    psql = ["psql", "-h", "127.0.0.1", "-p", str(pg_port), "-U", "postgres", "-tA"]
    for database in (DATABASE, ONLINE_DATABASE):
        exists = _run([*psql, "-c", f"SELECT 1 FROM pg_database WHERE datname = '{database}'"],
                      "psql")  # fmt: skip
        if exists.strip() != "1":
            log.info("[3/4] creating database %s", database)
            _run([*psql, "-c", f"CREATE DATABASE {database}"], "CREATE DATABASE")
        else:
            log.info("[3/4] database %s exists", database)
    artifacts = team_dir / "artifacts"
    artifacts.mkdir(exist_ok=True)
    server_log = team_dir / "mlflow.log"
    mlflow = Path(sys.executable).parent / "mlflow"
    command = [str(mlflow), "server", "--host", host, "--port", str(port), "--workers", "1",
               "--backend-store-uri", team.backend_uri,
               "--artifacts-destination", str(artifacts)]  # fmt: skip
    log.info("[4/4] starting the MLflow server on %s (log: %s; the first start migrates the "
             "database, ~30 s)", team.uri, server_log)  # fmt: skip
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(server_log, "ab") as out:
        proc = subprocess.Popen(command, cwd=team_dir, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)  # fmt: skip
    (team_dir / "mlflow.pid").write_text(f"{proc.pid}\n")
    (team_dir / STATE_FILE).write_text(json.dumps(asdict(team), indent=2) + "\n")
    try:
        wait_healthy(team.uri, timeout_s, alive=lambda: proc.poll() is None, log_path=server_log)
    except ChurnError:
        _stop_server(team_dir)
        raise
    log.info("ready in %.1f s", time.monotonic() - started)
    return team


def _stop_server(team_dir: Path) -> bool:
    pid_file = team_dir / "mlflow.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text())
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink()
        return False
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.killpg(pid, signal.SIGKILL)
    pid_file.unlink()
    return True


def down(team_dir: Path = TEAM_DIR) -> list[str]:
    """Stop the MLflow server and PostgreSQL; what was stopped."""
    team_dir = team_dir.resolve()
    team = read_state(team_dir)
    stopped = []
    if _stop_server(team_dir):
        stopped.append("MLflow server")
    if team is not None and (Path(team.pg_data) / "postmaster.pid").exists():
        _run(as_postgres([pg_command("pg_ctl"), "-D", team.pg_data, "-m", "fast", "-w",
                          "stop"]), "pg_ctl stop")  # fmt: skip
        stopped.append("PostgreSQL")
    return stopped


# --- DVC remote: push and pull with sizes -------------------------------------------------


def cached_outputs(root: Path = Path(".")) -> list[dict]:
    """The DVC-cached outs of dvc.lock (path, size, files): what push and pull move.
    Outs with `cache: false` are committed to git and never leave through the remote."""
    lock = yaml.safe_load((root / "dvc.lock").read_text()) or {}
    stages = (yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("stages", {})
    uncached = set()
    for stage in stages.values():
        for out in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
            if isinstance(out, dict):
                ((path, options),) = out.items()
                if isinstance(options, dict) and options.get("cache") is False:
                    uncached.add(path)
    outs = []
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs", []):
            if out["path"] not in uncached:
                outs.append({"path": out["path"], "size": int(out.get("size", 0)),
                             "files": int(out.get("nfiles", 1))})  # fmt: skip
    return outs


def describe(outs: list[dict]) -> str:
    size = sum(o["size"] for o in outs)
    files = sum(o["files"] for o in outs)
    return f"{len(outs)} outputs, {files} files, {size / 1e6:.1f} MB"


def transfer(direction: str, args: list[str], root: Path = Path(".")) -> float:
    """`dvc push` or `dvc pull` with what it moves said before and the time after."""
    outs = cached_outputs(root)
    remote = _default_remote(root)
    log.info("%s %s %s remote %s", direction, describe(outs),
             "to" if direction == "push" else "from", remote or "(none configured)")  # fmt: skip
    if remote is None and "-r" not in args and "--remote" not in args:
        raise ChurnError("no DVC remote is configured: `dvc remote add --local -d team DIR` "
                         "(a shared folder) or an s3:// URL (pip install dvc-s3); see README "
                         "'Team mode'")  # fmt: skip
    for out in outs:
        log.info("  %-40s %8.2f MB  %5d files", out["path"], out["size"] / 1e6, out["files"])
    started = time.monotonic()
    dvc = Path(sys.executable).parent / "dvc"
    result = subprocess.run([str(dvc), direction, *args], cwd=root)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise ChurnError(f"dvc {direction} failed (exit {result.returncode}) after {elapsed:.1f} s")
    log.info("dvc %s done in %.1f s", direction, elapsed)
    return elapsed


def _default_remote(root: Path) -> str | None:
    dvc = Path(sys.executable).parent / "dvc"
    result = subprocess.run([str(dvc), "config", "core.remote"], cwd=root, capture_output=True,
                            text=True)  # fmt: skip
    return result.stdout.strip() or None if result.returncode == 0 else None
