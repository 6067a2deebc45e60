"""The registry: MLflow alias + registry/<name>/champion.json + history.jsonl, together.

champion.json is what serving reads; it is replaced atomically (temp, fsync, rename)
and is the commit point of a decision: the alias is moved first, the file second, the
history line last. Every crash point is recoverable with `churn registry verify --repair`:
a moved alias is moved back; a champion.json with no history record gets the record
rebuilt from the file (which names the champion it replaced); temp files of a crashed
writer are removed the next time the lock is taken. Promote and rollback hold an
exclusive lock on registry/<name>/.lock.

champion.json arrives by pull request, so it is input: the model is only ever read from
the content-store path derived from its sha256 (artifact_path must equal that path), and
loaded with skops (churn.modelfile), never unpickled.

Model bytes are kept in a content-addressed store, mlflow/models/<sha256>/ (git-ignored),
so champion.json names the same path on every machine; a fresh clone rebuilds the bytes
with `dvc repro` (training is deterministic) and promote restores them there.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import logging
import os
import re
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from churn import guarded, modelfile, tracking
from churn.errors import ChurnError, RegistryError
from churn.fastpath import COMPILED_FILE, compiled_sha256
from churn.io import atomic_copy, atomic_write_text, sha256_file

log = logging.getLogger("churn.registry")

# One lineage per registered model name (promote.model_name): registry/<name>/ holds its
# champion.json and history.jsonl, so a user's own dataset starts at version 1 of its own
# lineage and is never compared with another's champion.
# CHURN_REGISTRY_DIR: another root for throwaway runs (CI's small run); serve reads it too.
REGISTRY_ROOT = Path(os.environ.get("CHURN_REGISTRY_DIR", "registry"))
DEFAULT_LINEAGE = "streamflow-churn"
LINEAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def lineage_dir(name: str, root: Path | None = None) -> Path:
    """The registry folder of one lineage (a name like an MLflow registered model's)."""
    if not LINEAGE_NAME.fullmatch(name) or ".." in name:
        raise ChurnError(f"promote.model_name {name!r}: use letters, digits, '.', '_' or '-' "
                         "(at most 64, first a letter or digit)")  # fmt: skip
    return (REGISTRY_ROOT if root is None else root) / name


REGISTRY_DIR = lineage_dir(DEFAULT_LINEAGE)
CHAMPION_FILE = "champion.json"
HISTORY_FILE = "history.jsonl"
LOCK_FILE = ".lock"
STORE_DIR = Path("mlflow") / "models"
MODEL_FILE = modelfile.MODEL_FILE
CONTRACT_FILE = "feature_contract.json"
CHAMPION, CHALLENGER = "champion", "challenger"
REQUIRED = ("model_name", "version", "alias", "run_id", "sha256", "artifact_path", "as_of")
SHA256 = re.compile(r"[0-9a-f]{64}")
RUN_ID = re.compile(r"[0-9a-f]{32}")
VERSION = re.compile(r"[1-9][0-9]{0,8}")


def crash_point(name: str) -> None:
    """Fault injection for the crash tests: SIGKILL this process at a named point."""
    if os.environ.get("CHURN_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def actor() -> str:
    return os.environ.get("CHURN_ACTOR") or f"{getpass.getuser()}@{socket.gethostname()}"


@contextmanager
def locked(root: Path = REGISTRY_DIR, timeout_s: float = 60.0) -> Iterator[None]:
    """Serialise promote and rollback across processes."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_FILE, "w") as fh:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ChurnError(
                        f"{root / LOCK_FILE}: another promote or rollback holds the lock"
                    ) from None
                time.sleep(0.1)
        try:
            _clean_temp_files(root)
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _clean_temp_files(root: Path) -> None:
    """Remove temp files a crashed writer left (callers hold the lock, so none is live)."""
    for tmp in root.glob(f".{CHAMPION_FILE}.*.tmp"):
        tmp.unlink(missing_ok=True)


# --- champion.json and history ------------------------------------------------------


def read_champion(root: Path = REGISTRY_DIR) -> dict[str, Any] | None:
    """champion.json checked (churn.guarded, then check_entry); None when there is none."""
    path = root / CHAMPION_FILE
    try:
        entry = guarded.read_json(path, max_bytes=1_000_000)
    except FileNotFoundError:
        return None
    return check_entry(entry, str(path))


def check_entry(entry: Any, where: str) -> dict[str, Any]:
    """A champion record as it must be; anything else is refused with the field and rule."""
    if not isinstance(entry, dict):
        raise ChurnError(f"{where}: expected a JSON object, got {type(entry).__name__}; "
                         "restore it from git")  # fmt: skip
    missing = [key for key in REQUIRED if key not in entry]
    if missing:
        raise ChurnError(f"{where}: missing fields {missing}; restore it from git")

    def refuse(key: str, rule: str) -> ChurnError:
        return ChurnError(f"{where}: field '{key}' breaks rule '{rule}' "
                          f"(got {str(entry.get(key))[:80]!r}); refusing it")  # fmt: skip

    for key, pattern in (("sha256", SHA256), ("run_id", RUN_ID), ("version", VERSION)):
        if not isinstance(entry[key], str) or not pattern.fullmatch(entry[key]):
            raise refuse(key, f"matches {pattern.pattern}")
    expected = store_path(entry["sha256"])
    if entry["artifact_path"] != str(expected):
        raise refuse("artifact_path", f"is the content-store path {expected} of sha256")
    contract = entry.get("contract_path")
    if contract is not None and contract != str(expected.parent / CONTRACT_FILE):
        raise refuse("contract_path", f"is {expected.parent / CONTRACT_FILE}")
    for key in ("model_name", "as_of"):
        if not isinstance(entry[key], str):
            raise refuse(key, "is a string")
    compiled = entry.get("compiled_sha256")
    if compiled is not None and (not isinstance(compiled, str) or not SHA256.fullmatch(compiled)):
        raise refuse("compiled_sha256", f"is null or matches {SHA256.pattern}")
    return entry


def write_champion(entry: dict[str, Any], root: Path = REGISTRY_DIR) -> None:
    text = json.dumps(entry, indent=2) + "\n"
    path = root / CHAMPION_FILE
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{CHAMPION_FILE}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        crash_point("before_rename")
        os.replace(tmp, path)
        dir_fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        Path(tmp).unlink(missing_ok=True)


def append_history(record: dict[str, Any], root: Path = REGISTRY_DIR) -> None:
    root.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"at": now(), "actor": actor(), **record}, sort_keys=False)
    with open(root / HISTORY_FILE, "a") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_history(root: Path = REGISTRY_DIR) -> list[dict[str, Any]]:
    """The decisions of history.jsonl, oldest first. A line that is not a JSON object (a
    truncated write, a bad merge, a non-UTF-8 byte) is skipped with a warning:
    `churn registry verify` reports it, and one bad line does not stop serving."""
    records, problems = history_lines(root)
    for problem in problems:
        log.warning("skipped: %s", problem)
    return records


def history_lines(root: Path = REGISTRY_DIR) -> tuple[list[dict[str, Any]], list[str]]:
    """history.jsonl's records and one message per line that is not a record."""
    path = root / HISTORY_FILE
    try:
        data = guarded.read_bytes(path, guarded.MAX_HISTORY_BYTES)
    except FileNotFoundError:
        return [], []
    records, problems = [], []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = guarded.parse(line, f"{path}:{number}")
        except RegistryError as exc:
            problems.append(str(exc))
            continue
        if not isinstance(record, dict):
            problems.append(f"{path}:{number}: expected a JSON object per line")
            continue
        records.append(record)
    return records, problems


# --- the content-addressed artifact store ----------------------------------------------


def store_path(sha256: str) -> Path:
    if not SHA256.fullmatch(sha256):
        raise ChurnError(f"sha256 {sha256[:80]!r} is not 64 lowercase hex digits")
    return STORE_DIR / sha256 / MODEL_FILE


def store_artifacts(model_path: Path, contract_path: Path) -> Path:
    """Copy the model and its contract into mlflow/models/<sha256>/; return the model path.

    The contract is copied again each time (a newer code may add fields), but a stored
    model keeps the threshold it was promoted with: a threshold is part of a version's
    decision, like the MLflow run's logged contract that alias-mode replicas read, and a
    new one reaches serving only with a new version (promote says so)."""
    sha = sha256_file(model_path)
    target = store_path(sha)
    stored = target.parent / CONTRACT_FILE
    contract = json.loads(Path(contract_path).read_text())
    kept = json.loads(stored.read_text()).get("threshold") if stored.exists() else None
    if kept is not None and kept != contract.get("threshold"):
        atomic_write_text(stored, json.dumps({**contract, "threshold": kept}, indent=2) + "\n")
    else:
        atomic_copy(contract_path, stored)
    if not (target.exists() and sha256_file(target) == sha):
        atomic_copy(model_path, target)
    return target


RUNS_FILE = "runs.json"  # the run holding the stored bytes, per tracking store


def record_local_run(sha256: str, run_id: str | None) -> None:
    """Note which run of this tracking store holds the stored bytes. champion.json's run_id
    is the run of the machine that decided; a clone's store rebuilds the same bytes in a run
    of its own. Serving reads this note to name a run id that resolves here, without
    importing MLflow."""
    if run_id is None or not RUN_ID.fullmatch(run_id):
        return
    path = store_path(sha256).parent / RUNS_FILE
    runs = {**_recorded_runs(path), tracking.tracking_uri(): run_id}
    atomic_write_text(path, json.dumps(runs, indent=2, sort_keys=True) + "\n")


def _recorded_runs(path: Path) -> dict[str, str]:
    try:
        runs = guarded.read_json(path, max_bytes=1_000_000)
    except (OSError, RegistryError):
        return {}
    return runs if isinstance(runs, dict) else {}


def local_run_id(entry: dict[str, Any]) -> str:
    """The run id of the entry's bytes in this tracking store, as promote or rollback noted
    it; champion.json's own run_id when nothing was noted here."""
    run_id = _recorded_runs(store_path(entry["sha256"]).parent / RUNS_FILE).get(
        tracking.tracking_uri()
    )
    return run_id if isinstance(run_id, str) and RUN_ID.fullmatch(run_id) else entry["run_id"]


ONLINE_DIR = Path("mlflow") / "online"
ONLINE_FILES = ("online_features.parquet", "features.json")
ONLINE_ARTIFACTS = "online"  # the folder of a champion's run that holds them on a server


def online_dir(root: Path = REGISTRY_DIR) -> Path:
    """Where serving reads the online features of a lineage: outside every DVC out, so a
    failed `dvc repro` (which deletes a stage's outs before running it) cannot remove them.
    Named by the registry root and lineage (registry/x -> mlflow/online/registry-x)."""
    return ONLINE_DIR / f"{root.parent.name}-{root.name}"


def publish_online(prepared_dir: Path, root: Path = REGISTRY_DIR) -> Path:
    """Copy prepare's online table (and its spec) to online_dir, each file atomically."""
    target = online_dir(root)
    for name in ONLINE_FILES:
        atomic_copy(prepared_dir / name, target / name)
    share_online(prepared_dir, root)
    return target / ONLINE_FILES[0]


def contract_file(entry: dict[str, Any]) -> Path:
    return store_path(entry["sha256"]).parent / CONTRACT_FILE


def runs_holding(entry: dict[str, Any]) -> list[str]:
    """MLflow runs that may hold the entry's bytes: the deciding run (champion.json's, in
    the deciding machine's store), then the run of this store's version with its sha256
    (a clone that restored the champion into a shared server logged its own run)."""
    runs = [entry["run_id"]]
    version = tracking.find_version_by_sha(entry["model_name"], entry["sha256"])
    if version is not None:
        run_id = (tracking.version_summary(entry["model_name"], version) or {}).get("run_id")
        if run_id and run_id not in runs:
            runs.append(run_id)
    return runs


def _fetch(entry: dict[str, Any], path: Path) -> None:
    """Download model and contract from a run holding them into the content store; the
    model is kept only if its sha256 is the entry's."""
    tried = []
    for run_id in runs_holding(entry):
        if not RUN_ID.fullmatch(run_id):
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".fetch-") as tmp:
            try:
                model = tracking.download_artifact(f"runs:/{run_id}/{MODEL_FILE}", Path(tmp))
                contract = tracking.download_artifact(f"runs:/{run_id}/{CONTRACT_FILE}",
                                                      Path(tmp))  # fmt: skip
            except Exception as exc:
                tried.append(f"run {run_id}: {type(exc).__name__}")
                continue
            actual = sha256_file(model)
            if actual != entry["sha256"]:
                tried.append(f"run {run_id}: sha256 {actual[:12]}…")
                continue
            atomic_copy(contract, path.parent / CONTRACT_FILE)
            atomic_copy(model, path)
            log.info("fetched version %s (sha256 %s…) from %s run %s", entry["version"],
                     entry["sha256"][:12], tracking.tracking_uri(), run_id)  # fmt: skip
            return
    raise ChurnError(
        f"{path}: artifact of version {entry['version']} is absent here and no run of "
        f"{tracking.tracking_uri()} holds it ({'; '.join(tried) or 'no run'}); run `dvc repro` "
        "(training is deterministic and promote restores it)"
    )


def verified_artifact(entry: dict[str, Any]) -> Path:
    """The content-store path of an entry's model with its sha256 checked (fetched with its
    contract from the tracking store if absent). The path comes from the sha256, never from
    the JSON."""
    path = store_path(entry["sha256"])
    absent = not path.exists() or not (path.parent / CONTRACT_FILE).exists()
    if absent and entry.get("artifact_uri"):
        try:
            _fetch(entry, path)
        except ChurnError:
            if not path.exists():
                raise  # with only the contract missing, the checks below say more
    if not path.exists():
        raise ChurnError(
            f"{path}: artifact of version {entry['version']} is absent; run `dvc repro` "
            "(training is deterministic and promote restores it)"
        )
    guarded.require_regular(path)  # a symlink to /dev/zero would be hashed forever
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise ChurnError(
            f"{path}: sha256 {actual[:12]}… does not match the registry's "
            f"{entry['sha256'][:12]}…; refusing to use it"
        )
    return path


def share_online(prepared_dir: Path, root: Path) -> None:
    """On a tracking server: upload the online table to the champion's run (online/), so
    replicas and clones that never ran prepare serve the same users."""
    champion = read_champion(root)
    if champion is None or not tracking.is_shared():
        return
    run_id = runs_holding(champion)[-1]
    tracking.log_artifacts(run_id, [prepared_dir / n for n in ONLINE_FILES], ONLINE_ARTIFACTS)
    log.info("uploaded the online features to run %s/%s", run_id, ONLINE_ARTIFACTS)


def fetch_online(entry: dict[str, Any], dst: Path) -> Path:
    """The champion's online table from the tracking server (what share_online uploaded)
    into dst; the parquet path."""
    tried = []
    for run_id in reversed(runs_holding(entry)):
        if not RUN_ID.fullmatch(run_id):
            continue
        try:
            folder = tracking.download_artifact(f"runs:/{run_id}/{ONLINE_ARTIFACTS}", dst)
        except Exception as exc:
            tried.append(f"run {run_id}: {type(exc).__name__}")
            continue
        if all((folder / n).is_file() for n in ONLINE_FILES):
            return folder / ONLINE_FILES[0]
        tried.append(f"run {run_id}: no {'/'.join(ONLINE_FILES)}")
    raise ChurnError(
        f"the online features of version {entry['version']} are neither published here "
        f"({ONLINE_DIR}) nor on {tracking.tracking_uri()} ({'; '.join(tried) or 'no run'}); "
        "run `dvc repro` (promote publishes them)"
    )


def alias_entry(name: str) -> dict[str, Any] | None:
    """The champion as the tracking store's alias names it (team mode: what a replica
    serves without a git pull), checked like a champion.json."""
    version = tracking.alias_version(name, CHAMPION)
    if version is None:
        return None
    info = tracking.version_summary(name, version) or {}
    sha = str(info.get("tags", {}).get(tracking.MODEL_SHA_TAG, ""))
    where = f"models:/{name}@{CHAMPION}"
    if not SHA256.fullmatch(sha) or not RUN_ID.fullmatch(str(info.get("run_id"))):
        raise ChurnError(f"{where}: version {version} has no valid {tracking.MODEL_SHA_TAG} "
                         "tag or run; refusing it")  # fmt: skip
    entry = entry_for(name=name, version=version, run_id=info["run_id"], sha256=sha,
                      reason=f"alias {CHAMPION} on {tracking.tracking_uri()}", decision=None,
                      previous=None)  # fmt: skip
    return check_entry(entry, where)


# --- entries -------------------------------------------------------------------------


def entry_for(
    *,
    name: str,
    version: str,
    run_id: str,
    sha256: str,
    reason: str,
    decision: dict | None,
    previous: dict[str, Any] | None,
    metrics: dict[str, float] | None = None,
) -> dict[str, Any]:
    """A champion.json record for a registered version (metrics default to its run's).

    `previous` (version and sha256 of the champion it replaces) makes the file enough to
    rebuild its history record after a crash."""
    run = tracking.run_summary(run_id)
    tags = run["tags"]
    contract_path = store_path(sha256).parent / CONTRACT_FILE
    features = []
    if guarded.exists(contract_path):
        contract = guarded.read_json(contract_path)
        features = [{"name": f["name"], "kind": f["kind"]} for f in contract["features"]]
    return {
        "model_name": name,
        "version": version,
        "alias": CHAMPION,
        "run_id": run_id,
        "model_uri": f"models:/{name}/{version}",
        "artifact_path": str(store_path(sha256)),
        "artifact_uri": f"runs:/{run_id}/{MODEL_FILE}",
        "contract_path": str(store_path(sha256).parent / CONTRACT_FILE),
        "sha256": sha256,
        "as_of": tags.get("as_of"),
        "model": tags.get("model"),
        "metrics": {k: round(float(v), 6) for k, v in sorted((metrics or run["metrics"]).items())},
        "git_commit": tags.get("git_commit"),
        "data_sha256": tags.get("data_sha256"),
        "decided_at": now(),
        "decided_by": actor(),
        "reason": reason,
        "features": features,
        "decision": decision,
        "previous": None
        if previous is None
        else {k: previous.get(k) for k in ("version", "sha256")},
    }


def version_for_sha(name: str, sha256: str, run_id: str | None, at_least: int = 1) -> str:
    """The local registry version holding this sha256, registering it from run_id if needed
    (numbered `at_least` or higher, so a clone's store keeps the lineage's numbers)."""
    version = tracking.find_version_by_sha(name, sha256)
    if version is not None:
        return version
    if run_id is None:
        raise ChurnError(
            f"no MLflow run holds model sha256 {sha256[:12]}…; run `churn train` first"
        )
    return tracking.register_version(name, run_id, {tracking.MODEL_SHA_TAG: sha256}, at_least)


def next_version(root: Path) -> int:
    """One above every version number this lineage's files have recorded."""
    seen = [0]
    champion = read_champion(root)
    if champion is not None:
        seen.append(int(champion["version"]))
    for record in read_history(root):
        for key in ("version", "version_before", "version_after", "challenger"):
            value = record.get(key)
            if isinstance(value, str | int) and str(value).isdigit():
                seen.append(int(value))
    return max(seen) + 1


def move_champion(entry: dict[str, Any], record: dict[str, Any], root: Path = REGISTRY_DIR) -> None:
    """Alias, then the file (the commit point), then the history record; caller holds the
    lock. `verify --repair` completes any prefix of these three steps."""
    tracking.set_alias(entry["model_name"], CHAMPION, entry["version"])
    crash_point("after_alias")
    write_champion(entry, root)
    crash_point("after_file")
    append_history(record, root)
    record_local_run(entry["sha256"], entry["run_id"])


def champion_record(entry: dict[str, Any], action: str, **extra: Any) -> dict[str, Any]:
    """The history record of a champion change (promote or rollback) to `entry`."""
    previous = entry.get("previous") or {}
    record = {"action": action, "model_name": entry["model_name"],
              "version_before": previous.get("version"), "version_after": entry["version"],
              "sha256_before": previous.get("sha256"), "sha256": entry["sha256"],
              "compiled_sha256": entry.get("compiled_sha256")}  # fmt: skip
    if action == "rollback":
        record["rolled_back_sha256"] = previous.get("sha256")
    return {**record, **extra}


def last_change(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The latest record that made a model champion."""
    changes = [r for r in history if r.get("action") in ("promote", "rollback")]
    return changes[-1] if changes else None


def local_lineage(name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Where the champion lives in this tracking store. champion.json's run_id is the run of
    the machine that decided; a clone rebuilds the same bytes in a run of its own, found
    here by sha256 (the registered version holding them, and that version's run)."""
    version = tracking.find_version_by_sha(name, entry["sha256"])
    run_id = None
    if version is not None:
        run_id = (tracking.version_summary(name, version) or {}).get("run_id")
    return {"version": version, "run_id": run_id, "tracking_uri": tracking.tracking_uri()}


# --- verify and rollback ---------------------------------------------------------------


def verify(name: str, repair: bool = False, root: Path | None = None) -> list[str]:
    """See _verify; a repair holds the registry lock (and so also removes stale temp files)."""
    root = lineage_dir(name) if root is None else root
    if not repair:
        return _verify(name, False, root)
    with locked(root):
        return _verify(name, True, root)


def _verify(name: str, repair: bool, root: Path) -> list[str]:
    """Problems between champion.json, the MLflow alias and the artifact (empty: all agree).

    With repair, moves the alias to the version holding champion.json's sha256 and writes
    the history record a crash left out (rebuilt from champion.json).
    """
    champion = read_champion(root)
    if champion is None:
        return [f"{root / CHAMPION_FILE}: no champion yet; run `dvc repro` to promote one"]
    history, problems = history_lines(root)
    last = last_change(history)
    if last is None or last.get("sha256") != champion["sha256"]:
        problems.append(
            f"{root / HISTORY_FILE}: no record made version {champion['version']} (sha256 "
            f"{champion['sha256'][:12]}…) champion (a promote or rollback stopped before "
            "writing it); repair with `churn registry verify --repair`"
        )
        if repair:
            reason = str(champion.get("reason", ""))
            action = "rollback" if reason.startswith("rollback") else "promote"
            append_history(champion_record(champion, action, reason=reason, repaired=True), root)
            problems[-1] += " (repaired)"
    try:
        verified_artifact(champion)
    except ChurnError as exc:
        problems.append(str(exc))
    problems += _compiled_problems(champion)
    alias = tracking.alias_version(name, CHAMPION)
    holder = tracking.find_version_by_sha(name, champion["sha256"])
    if holder is None:
        problems.append(
            f"no local MLflow version holds the champion's sha256 {champion['sha256'][:12]}…; "
            "run `dvc repro` (promote restores it)"
        )
    elif alias != holder:
        problems.append(
            f"alias '{CHAMPION}' points at version {alias}, champion.json's model is version "
            f"{holder}; repair with `churn registry verify --repair`"
        )
        if repair:
            tracking.set_alias(name, CHAMPION, holder)
            append_history(
                {
                    "action": "repair",
                    "model_name": name,
                    "version_before": alias,
                    "version_after": holder,
                    "sha256": champion["sha256"],
                    "reason": "alias moved back to match champion.json",
                },
                root,
            )
            problems[-1] += " (repaired)"
    return problems


def _compiled_problems(champion: dict[str, Any]) -> list[str]:
    """compiled.json against the sha256 the champion records (absent is fine: serving then
    loads the Pipeline; different bytes are never served, and a sign of tampering)."""
    recorded = champion.get("compiled_sha256")
    path = store_path(champion["sha256"]).parent / COMPILED_FILE
    if recorded is None or not guarded.exists(path):
        return []
    try:
        found = compiled_sha256(path)
    except RegistryError as exc:
        return [str(exc)]
    if found == recorded:
        return []
    return [
        f"{path}: sha256 {found[:12]}… is not the {recorded[:12]}… champion.json records "
        "(edited after promote?); serving ignores it; delete it and run "
        "`dvc repro -f -s promote` to rewrite it"
    ]


def recorded_compiled(history: list[dict[str, Any]], sha256: str) -> str | None:
    """The compiled.json sha256 the history recorded when `sha256` last became champion
    (a rollback brings it back with its model; None: serving loads the Pipeline)."""
    for record in reversed(history):
        if record.get("sha256") == sha256 and record.get("action") in ("promote", "rollback"):
            found = record.get("compiled_sha256")
            return found if isinstance(found, str) and SHA256.fullmatch(found) else None
    return None


def previous_champion(history: list[dict[str, Any]], current_sha: str) -> dict[str, Any] | None:
    """The champion before the current one, from the audit trail."""
    for record in reversed(history):
        made_current = record.get("action") in ("promote", "rollback")
        if made_current and record.get("sha256") == current_sha and record.get("sha256_before"):
            return {"version": record.get("version_before"), "sha256": record["sha256_before"]}
    return None


def rollback(name: str, to: str | None, reason: str, root: Path | None = None) -> dict:
    """Move alias and champion.json to another version (default: the previous champion)."""
    root = lineage_dir(name) if root is None else root
    if not reason.strip():
        raise ChurnError("--reason is required: say why you roll back")
    with locked(root):
        current = read_champion(root)
        if current is None:
            raise ChurnError("no champion to roll back from")
        if to is None:
            previous = previous_champion(read_history(root), current["sha256"])
            if previous is None:
                raise ChurnError("history names no previous champion; pass --to VERSION")
            target_version = tracking.find_version_by_sha(name, previous["sha256"])
            if target_version is None:
                raise ChurnError(
                    f"the previous champion (sha256 {previous['sha256'][:12]}…) is not in "
                    "the local MLflow registry; pass --to VERSION"
                )
        else:
            target_version = str(to)
        info = tracking.version_summary(name, target_version)
        if info is None:
            raise ChurnError(f"version {target_version} of model '{name}' does not exist")
        sha = info["tags"].get(tracking.MODEL_SHA_TAG)
        if sha is None:
            raise ChurnError(f"version {target_version} has no {tracking.MODEL_SHA_TAG} tag")
        if sha == current["sha256"]:
            raise ChurnError(f"version {target_version} is already the champion")
        entry = entry_for(
            name=name, version=target_version, run_id=info["run_id"], sha256=sha,
            reason=f"rollback: {reason}", decision=None, previous=current,
        )  # fmt: skip
        verified_artifact(entry)  # refuses a missing or corrupt artifact
        entry["compiled_sha256"] = recorded_compiled(read_history(root), sha)
        move_champion(entry, champion_record(entry, "rollback", reason=reason), root)
        published = online_dir(root)
        if all((published / n).is_file() for n in ONLINE_FILES):
            # replicas reading the alias get today's users, not those of the month this
            # version was promoted in
            share_online(published, root)
        return entry
