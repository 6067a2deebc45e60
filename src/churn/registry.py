"""The registry: MLflow alias + registry/champion.json + registry/history.jsonl, together.

champion.json is what serving reads; it is replaced atomically (temp, fsync, rename)
and is the commit point of a decision: the alias is moved first, the file second, so a
crash in between leaves the old file and an alias that `churn registry verify --repair`
moves back. Promote and rollback hold an exclusive lock on registry/.lock.

Model bytes are kept in a content-addressed store, mlflow/models/<sha256>/ (git-ignored),
so champion.json names the same path on every machine; a fresh clone rebuilds the bytes
with `dvc repro` (training is deterministic) and promote restores them there.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from churn import tracking
from churn.errors import ChurnError
from churn.io import sha256_file

# CHURN_REGISTRY_DIR: a scratch registry for throwaway runs (CI's small run); serve reads it too
REGISTRY_DIR = Path(os.environ.get("CHURN_REGISTRY_DIR", "registry"))
CHAMPION_FILE = "champion.json"
HISTORY_FILE = "history.jsonl"
LOCK_FILE = ".lock"
STORE_DIR = Path("mlflow") / "models"
MODEL_FILE = "model.joblib"
CONTRACT_FILE = "feature_contract.json"
CHAMPION, CHALLENGER = "champion", "challenger"
REQUIRED = ("model_name", "version", "alias", "run_id", "sha256", "artifact_path", "as_of")


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
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- champion.json and history ------------------------------------------------------


def read_champion(root: Path = REGISTRY_DIR) -> dict[str, Any] | None:
    path = root / CHAMPION_FILE
    if not path.exists():
        return None
    try:
        entry = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ChurnError(f"{path}: not valid JSON ({exc}); restore it from git") from None
    missing = [key for key in REQUIRED if key not in entry]
    if missing:
        raise ChurnError(f"{path}: missing fields {missing}; restore it from git")
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
    path = root / HISTORY_FILE
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise ChurnError(f"{path}:{number}: not valid JSON") from None
    return records


# --- the content-addressed artifact store ----------------------------------------------


def store_path(sha256: str) -> Path:
    return STORE_DIR / sha256 / MODEL_FILE


def store_artifacts(model_path: Path, contract_path: Path) -> Path:
    """Copy the model and its contract into mlflow/models/<sha256>/; return the model path."""
    sha = sha256_file(model_path)
    target = store_path(sha)
    if target.exists() and sha256_file(target) == sha:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    for source, name in ((model_path, MODEL_FILE), (contract_path, CONTRACT_FILE)):
        tmp = target.parent / f".{name}.tmp"
        shutil.copyfile(source, tmp)
        os.replace(tmp, target.parent / name)
    return target


def verified_artifact(entry: dict[str, Any]) -> Path:
    """The local path of an entry's model with its sha256 checked (downloaded if needed)."""
    path = Path(entry["artifact_path"])
    if not path.exists() and entry.get("artifact_uri"):
        try:
            fetched = tracking.download_artifact(entry["artifact_uri"], path.parent)
        except Exception as exc:
            raise ChurnError(
                f"{path}: champion artifact absent and not downloadable from "
                f"{entry['artifact_uri']} ({type(exc).__name__}); run `dvc repro` to rebuild it"
            ) from None
        if fetched != path:
            os.replace(fetched, path)
    if not path.exists():
        raise ChurnError(
            f"{path}: artifact of version {entry['version']} is absent; run `dvc repro` "
            "(training is deterministic and promote restores it)"
        )
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise ChurnError(
            f"{path}: sha256 {actual[:12]}… does not match the registry's "
            f"{entry['sha256'][:12]}…; refusing to use it"
        )
    return path


# --- entries -------------------------------------------------------------------------


def entry_for(
    *,
    name: str,
    version: str,
    run_id: str,
    sha256: str,
    reason: str,
    decision: dict | None,
    metrics: dict[str, float] | None = None,
) -> dict[str, Any]:
    """A champion.json record for a registered version (metrics default to its run's)."""
    run = tracking.run_summary(run_id)
    tags = run["tags"]
    contract_path = store_path(sha256).parent / CONTRACT_FILE
    features = []
    if contract_path.exists():
        contract = json.loads(contract_path.read_text())
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
    }


def version_for_sha(name: str, sha256: str, run_id: str | None) -> str:
    """The local registry version holding this sha256, registering it from run_id if needed."""
    version = tracking.find_version_by_sha(name, sha256)
    if version is not None:
        return version
    if run_id is None:
        raise ChurnError(
            f"no MLflow run holds model sha256 {sha256[:12]}…; run `churn train` first"
        )
    return tracking.register_version(name, run_id, {tracking.MODEL_SHA_TAG: sha256})


def move_champion(entry: dict[str, Any], root: Path = REGISTRY_DIR) -> None:
    """Alias first, then the file (the commit point); caller holds the lock."""
    tracking.set_alias(entry["model_name"], CHAMPION, entry["version"])
    crash_point("after_alias")
    write_champion(entry, root)
    crash_point("after_file")


# --- verify and rollback ---------------------------------------------------------------


def verify(name: str, repair: bool = False, root: Path = REGISTRY_DIR) -> list[str]:
    """Problems between champion.json, the MLflow alias and the artifact (empty: all agree).

    With repair, moves the alias to the version holding champion.json's sha256.
    """
    champion = read_champion(root)
    if champion is None:
        return [f"{root / CHAMPION_FILE}: no champion yet; run `dvc repro` to promote one"]
    problems = []
    try:
        verified_artifact(champion)
    except ChurnError as exc:
        problems.append(str(exc))
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


def previous_champion(history: list[dict[str, Any]], current_sha: str) -> dict[str, Any] | None:
    """The champion before the current one, from the audit trail."""
    for record in reversed(history):
        made_current = record.get("action") in ("promote", "rollback")
        if made_current and record.get("sha256") == current_sha and record.get("sha256_before"):
            return {"version": record.get("version_before"), "sha256": record["sha256_before"]}
    return None


def rollback(name: str, to: str | None, reason: str, root: Path = REGISTRY_DIR) -> dict:
    """Move alias and champion.json to another version (default: the previous champion)."""
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
            reason=f"rollback: {reason}", decision=None,
        )  # fmt: skip
        verified_artifact(entry)  # refuses a missing or corrupt artifact
        move_champion(entry, root)
        append_history(
            {"action": "rollback", "model_name": name, "version_before": current["version"],
             "version_after": target_version, "sha256_before": current["sha256"],
             "sha256": sha, "rolled_back_sha256": current["sha256"], "reason": reason},
            root,
        )  # fmt: skip
        return entry
