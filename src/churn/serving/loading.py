"""Loading what is served: the champion (champion.json or the alias), its model and
contract (sha256-checked, skops), the online features, the challenger."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from churn import guarded, modelfile, registry, runtimes
from churn.errors import ChurnError
from churn.fastpath import COMPILED_FILE, CompiledModel, compile_pipeline, read_compiled
from churn.online import Found, MemoryTable, PostgresTable, read_file_table
from churn.reasons import Explainer, explainer_for
from churn.serving.settings import Settings

log = logging.getLogger("churn.serve")


# --- loading ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """One loaded model: its registry entry, contract and compiled request path."""

    role: str
    entry: dict[str, Any]
    contract: dict[str, Any]
    compiled: CompiledModel
    # the file store's whole table through this model's preprocessing (None: postgres,
    # where each looked-up row is transformed per request)
    transformed: np.ndarray | None
    runtime: dict[str, Any]  # churn.runtimes.adopt's report: which runtime, and why

    def rows(self, found: Found) -> np.ndarray:
        """The looked-up users' rows through this model's preprocessing."""
        if self.transformed is not None and found.index is not None:
            return self.transformed[found.index]
        if found.records is not None:
            encoded = self.compiled.encode_tuples(found.records, found.columns)
            return self.compiled.transform(*encoded)
        return self.compiled.transform(*self.compiled.encode(found.frame()))

    @property
    def version(self) -> str:
        return str(self.entry["version"])

    @cached_property
    def explainer(self) -> Explainer:
        """Reasons for this model's scores, built on the first request that asks (a tree
        model's TreeSHAP imports shap: seconds no start should pay)."""
        return explainer_for(self.compiled)


@dataclass(frozen=True)
class Bundle:
    """Everything a request needs; swapped as one reference on reload."""

    champion: Served
    challenger: Served | None
    online: MemoryTable | PostgresTable
    loaded_at: float = field(default_factory=time.time)


Online = MemoryTable | PostgresTable


def _load_model(entry: dict[str, Any], role: str, online: Online, runtime: str) -> Served:
    path = registry.verified_artifact(entry)  # sha256 checked; nothing else is unpickled
    contract_path = registry.contract_file(entry)
    if not guarded.exists(contract_path):
        raise ChurnError(f"{contract_path}: feature contract of version {entry['version']} absent")
    contract = guarded.read_json(contract_path)
    names = [f["name"] for f in contract["features"]]
    present = set(online.columns)
    missing = [n for n in names if n not in present]
    if missing:
        raise ChurnError(f"online features lack {missing[:5]} required by version "
                         f"{entry['version']}")  # fmt: skip
    compiled_path = path.parent / COMPILED_FILE
    compiled, report = None, None
    if runtime in ("auto", "numpy") and guarded.exists(compiled_path):
        if modelfile.plainly_trusted(path.read_bytes()):
            compiled, report = _from_compiled_file(compiled_path, entry, runtime)
        else:  # skops decides (and refuses a pickle or untrusted types): no compiled path
            log.info("version %s: %s names types beyond the linear Pipeline's; loading it "
                     "with skops", entry["version"], path.name)  # fmt: skip
    if compiled is None:
        compiled, report = _from_pipeline(path, entry, online, runtime)
    transformed = None
    if isinstance(online, MemoryTable):
        transformed = compiled.transform(*compiled.encode(online.table))
    return Served(role, entry, contract, compiled, transformed, report)


def _from_compiled_file(
    path: Path, entry: dict[str, Any], runtime: str
) -> tuple[CompiledModel | None, dict[str, Any] | None]:
    """The numpy path from compiled.json without sklearn, or (None, None) with the reason
    logged when the file cannot be used (then the Pipeline is loaded as always)."""
    try:
        compiled, diff, rows = read_compiled(path, entry["sha256"], entry.get("compiled_sha256"))
    except ValueError as exc:
        log.warning("version %s: %s; loading the Pipeline instead", entry["version"], exc)
        return None, None
    detail = f"max |score - Pipeline score| {diff:.3g} on {rows} rows recorded in {path.name}"
    log.info("version %s: runtime numpy from %s (%s)", entry["version"], path.name, detail)
    report = {"name": "numpy", "wanted": runtime, "checked_rows": rows, "max_abs_diff": diff,
              "fallback_reason": None, "tried": {"numpy": detail},
              "source": COMPILED_FILE}  # fmt: skip
    return compiled, report


def _from_pipeline(
    path: Path, entry: dict[str, Any], online: Online, runtime: str
) -> tuple[CompiledModel, dict[str, Any]]:
    """The compiled request path from the skops Pipeline, checked against it on sample
    rows. (compiled.json is promote's to write: a file serve wrote would not be recorded
    with the champion, so no later start could trust it.)"""
    pipeline = modelfile.load(path)
    sample = online.sample()
    compiled = compile_pipeline(pipeline, sample)
    if compiled is None:
        raise ChurnError(f"version {entry['version']}: pipeline shape not supported by fastpath")
    reference = pipeline.predict_proba(sample[list(compiled.features)])[:, 1]
    num, cat = compiled.encode(sample)
    compiled, report = runtimes.adopt(compiled, compiled.transform(num, cat), reference,
                                      runtime)  # fmt: skip
    report["source"] = "pipeline"
    if report["fallback_reason"]:
        log.warning("version %s: runtime sklearn (exact path); %s", entry["version"],
                    report["fallback_reason"])  # fmt: skip
    else:
        log.info("version %s: runtime %s (%s)", entry["version"], report["name"],
                 report["tried"][report["name"]])  # fmt: skip
    return compiled, report


def challenger_entry(settings: Settings, champion: dict[str, Any]) -> dict[str, Any] | None:
    """The latest skipped candidate named in history (its bytes are in the content store)."""
    for record in reversed(registry.read_history(settings.registry_dir)):
        if record.get("action") == "skip" and record.get("challenger"):
            sha = record["sha256"]
            if sha == champion["sha256"]:
                return None
            store = registry.store_path(sha)
            return {**champion, "version": record["challenger"], "sha256": sha,
                    "artifact_path": str(store), "artifact_uri": None,
                    "contract_path": str(store.parent / registry.CONTRACT_FILE),
                    "alias": registry.CHALLENGER}  # fmt: skip
        if record.get("action") in ("promote", "rollback"):
            return None
    return None


def champion_entry(settings: Settings) -> dict[str, Any]:
    """champion.json of the lineage, or (alias mode) the tracking server's alias."""
    if settings.champion_from == "alias":
        entry = registry.alias_entry(settings.registry_dir.name)
        where = f"models:/{settings.registry_dir.name}@{registry.CHAMPION}"
    else:
        entry = registry.read_champion(settings.registry_dir)
        where = str(settings.registry_dir / registry.CHAMPION_FILE)
    if entry is None:
        raise ChurnError(f"{where}: no champion yet; run `dvc repro` to train and promote one")
    return entry


def _online_table(settings: Settings, entry: dict[str, Any]) -> Online:
    """The online features: the lineage's table in PostgreSQL (CHURN_ONLINE_STORE=postgres),
    else CHURN_FEATURES, else what promote published here (file mode), else the champion's
    run on the tracking server."""
    if settings.online_store == "postgres":
        return PostgresTable(settings.online_dsn, settings.registry_dir.name,
                             settings.online_cache)  # fmt: skip
    path = settings.features_path
    if path is None and settings.champion_from == "file":
        path = registry.online_dir(settings.registry_dir) / registry.ONLINE_FILES[0]
        if not path.exists() and entry.get("artifact_uri"):
            path = None  # a clone that pulled but never promoted: ask the server
    with tempfile.TemporaryDirectory(prefix="churn-online-") as tmp:
        if path is None:
            path = registry.fetch_online(entry, Path(tmp))
        if not path.exists():
            raise ChurnError(f"{path}: online features absent; run `dvc repro` "
                             "(promote publishes them)")  # fmt: skip
        spec_path = path.parent / "features.json"
        spec = guarded.read_json(spec_path) if guarded.exists(spec_path) else {}
        return read_file_table(path, spec.get("online_as_of"))


def load_bundle(settings: Settings, entry: dict[str, Any] | None = None) -> Bundle:
    """Read the registry (or serve `entry`, what this server's other workers serve) and
    the features; raise ChurnError with the reason when not servable."""
    entry = entry or champion_entry(settings)
    online = _online_table(settings, entry)
    champion = _load_model(entry, registry.CHAMPION, online, settings.runtime)
    challenger = None
    if settings.canary_fraction > 0 or settings.shadow:
        ch = challenger_entry(settings, entry)
        if ch is not None:
            try:
                challenger = _load_model(ch, registry.CHALLENGER, online, settings.runtime)
            except ChurnError as exc:
                log.warning("challenger not loaded: %s", exc)
    return Bundle(champion, challenger, online)
