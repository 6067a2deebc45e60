"""Reloading: swap the bundle atomically, follow other workers' reloads, poll for a
new champion."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from typing import Any

from fastapi import FastAPI

from churn import guarded, registry
from churn.errors import ChurnError
from churn.io import atomic_write_text
from churn.serving.loading import Bundle, load_bundle
from churn.serving.settings import Settings

log = logging.getLogger("churn.serve")


def _install(state: Any, bundle: Bundle) -> None:
    state.bundle = bundle  # one reference swap: in-flight requests keep the old bundle
    state.not_ready = None
    state.metrics.loaded(bundle)
    _settle_heap()


def _settle_heap() -> None:
    """Collect once, then freeze what is loaded out of the cyclic GC's reach. Batches
    allocate enough to start a full collection every few seconds, and a full collection
    walked every object of MLflow, pandas and the bundle: ~140 ms during which every
    queued request waited. Unfrozen first, so a reload does not keep the old bundle."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


SERVED = "served.json"  # in CHURN_RUN_DIR: the champion entry this server's workers serve


def served_entry(settings: Settings) -> dict[str, Any] | None:
    """The champion entry the workers of this `churn serve` agreed on (None: none yet, or a
    single process without CHURN_RUN_DIR). A worker the supervisor restarts loads this one,
    not a champion.json that changed without a reload, so all workers answer alike."""
    if settings.run_dir is None:
        return None
    path = settings.run_dir / SERVED
    try:
        return registry.check_entry(guarded.read_json(path), str(path))
    except FileNotFoundError:
        return None


def record_served(settings: Settings, bundle: Bundle) -> None:
    if settings.run_dir is not None:
        atomic_write_text(settings.run_dir / SERVED, json.dumps(bundle.champion.entry))


async def start(state: Any, settings: Settings) -> None:
    """A worker's first load: what the other workers serve when they serve something,
    else the registry's champion (then recorded for the workers after it)."""
    agreed = served_entry(settings)
    bundle = await asyncio.to_thread(load_bundle, settings, agreed)
    _install(state, bundle)
    if agreed is None:
        record_served(settings, bundle)


async def _reload(
    state: Any, settings: Settings, announce: bool = True, entry: dict[str, Any] | None = None
) -> tuple[bool, str]:
    async with state.reload_lock:
        try:
            bundle = await asyncio.to_thread(load_bundle, settings, entry)
        except ChurnError as exc:
            state.metrics.reloads.labels("failed").inc()
            log.error("reload failed, keeping the current model: %s", exc)
            return False, str(exc)
        _install(state, bundle)
        state.metrics.reloads.labels("ok").inc()
        log.info("reloaded: serving version %s", bundle.champion.version)
        if announce and settings.run_dir is not None:
            record_served(settings, bundle)  # before the announcement the others follow
            atomic_write_text(settings.run_dir / RELOAD_SIGNAL,
                              json.dumps({"sha256": bundle.champion.entry["sha256"],
                                          "version": bundle.champion.version}))  # fmt: skip
            state.reload_seen = _signal_key(settings)
        return True, bundle.champion.version


RELOAD_SIGNAL = "reload.json"


def _signal_key(settings: Settings) -> tuple[int, int] | None:
    """Identity of the reload announcement (a new file each time: atomic rename)."""
    if settings.run_dir is None:
        return None
    try:
        stat = (settings.run_dir / RELOAD_SIGNAL).stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


async def follow_reload(state: Any, settings: Settings) -> None:
    """Before answering: if another worker announced a reload this one has not seen, load
    the announced champion too (a stat per request when nothing changed)."""
    key = _signal_key(settings)
    if key is None or key == state.reload_seen:
        return
    async with state.reload_lock:
        if key == state.reload_seen:
            return
        state.reload_seen = key
        try:
            wanted = json.loads((settings.run_dir / RELOAD_SIGNAL).read_text()).get("sha256")
        except (OSError, ValueError, AttributeError):
            wanted = None
        current = state.bundle.champion.entry["sha256"] if state.bundle is not None else None
        if wanted is not None and wanted == current:
            return
    await _reload(state, settings, announce=False, entry=served_entry(settings))


def _champion_marker(settings: Settings) -> Any:
    """What changes when the champion does: champion.json's mtime, or the alias's version."""
    if settings.champion_from == "alias":
        from churn import tracking

        try:
            return tracking.alias_version(settings.registry_dir.name, registry.CHAMPION)
        except Exception as exc:  # the server is down: keep serving, ask again next time
            log.warning("polling the alias failed: %s", exc)
            return None
    path = settings.registry_dir / registry.CHAMPION_FILE
    return path.stat().st_mtime_ns if path.exists() else None


async def _poll(app: FastAPI, settings: Settings) -> None:
    seen = await asyncio.to_thread(_champion_marker, settings)
    if settings.champion_from == "alias" and app.state.bundle is not None:
        # the version served, not what the alias says by now: a promotion between the
        # load and this first look must still trigger a reload
        seen = app.state.bundle.champion.version
    while True:
        await asyncio.sleep(settings.poll_seconds)
        current = await asyncio.to_thread(_champion_marker, settings)
        if current is not None and current != seen:
            seen = current
            await _reload(app.state, settings)
