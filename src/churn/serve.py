"""The prediction API: a FastAPI app factory that serves the registry's champion.

Startup reads registry/<name>/champion.json, checks the artifact's sha256, loads the model and
its feature contract and the online feature table (the newest snapshot). It depends on
the registry and feature contracts only, and imports no MLflow when the artifact is a
local file. A missing or inconsistent registry does not crash the process: /ready says
503 with the reason, and POST /admin/reload (or polling) picks up a fixed registry.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import orjson
import pandas as pd
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, model_validator

from churn import modelfile, registry
from churn.errors import ChurnError
from churn.fastpath import CompiledModel, compile_pipeline
from churn.io import atomic_write_text

log = logging.getLogger("churn.serve")
access_log = logging.getLogger("churn.access")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # an X-Request-ID we echo; else a new one


# --- settings ------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Serving configuration (environment variables in brackets)."""

    # the lineage served: CHURN_REGISTRY_DIR (root, default registry/) / model name
    # (CHURN_MODEL_NAME, else params.yaml's promote.model_name, else streamflow-churn)
    registry_dir: Path = registry.REGISTRY_DIR
    # CHURN_FEATURES; default: what promote published for this registry (mlflow/online/...)
    features_path: Path | None = None
    admin_token: str | None = None  # CHURN_ADMIN_TOKEN: enables POST /admin/reload
    max_batch: int = 1000  # CHURN_MAX_BATCH
    max_body_bytes: int = 2_000_000  # CHURN_MAX_BODY_BYTES
    canary_fraction: float = 0.0  # CHURN_CANARY_FRACTION: users routed to the challenger
    shadow: bool = False  # CHURN_SHADOW=1: also score the challenger, answer with champion
    poll_seconds: float = 0.0  # CHURN_POLL_SECONDS: reload when the champion changes
    # CHURN_CHAMPION_FROM: "file" (registry/<name>/champion.json, the default) or "alias":
    # the tracking server's `champion` alias, model bytes and online features (team mode:
    # replicas follow a promotion on another machine without a git pull)
    champion_from: str = "file"
    # CHURN_RUN_DIR: shared by the workers of one `churn serve`; a reload in one worker is
    # announced there and every other worker follows before its next answer
    run_dir: Path | None = None

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        features = env.get("CHURN_FEATURES")
        name = env.get("CHURN_MODEL_NAME") or _params_model_name(Path("params.yaml"))
        return cls(
            registry_dir=registry.lineage_dir(
                name, Path(env.get("CHURN_REGISTRY_DIR", "registry"))
            ),
            features_path=Path(features) if features else None,
            admin_token=env.get("CHURN_ADMIN_TOKEN") or None,
            max_batch=int(env.get("CHURN_MAX_BATCH", "1000")),
            max_body_bytes=int(env.get("CHURN_MAX_BODY_BYTES", "2000000")),
            canary_fraction=float(env.get("CHURN_CANARY_FRACTION", "0")),
            shadow=env.get("CHURN_SHADOW", "0").lower() in ("1", "true", "yes"),
            poll_seconds=float(env.get("CHURN_POLL_SECONDS", "0")),
            run_dir=Path(env["CHURN_RUN_DIR"]) if env.get("CHURN_RUN_DIR") else None,
            champion_from=env.get("CHURN_CHAMPION_FROM", "file"),
        )

    def __post_init__(self) -> None:
        if self.champion_from not in CHAMPION_SOURCES:
            raise ChurnError(f"CHURN_CHAMPION_FROM={self.champion_from!r}: use one of "
                             f"{', '.join(CHAMPION_SOURCES)}")  # fmt: skip


CHAMPION_SOURCES = ("file", "alias")


def _params_model_name(path: Path) -> str:
    """promote.model_name of the repo state being served (the lineage `dvc repro` promoted)."""
    import yaml

    try:
        params = yaml.safe_load(path.read_text()) if path.exists() else None
    except yaml.YAMLError:
        params = None
    promote = params.get("promote") if isinstance(params, dict) else None
    name = promote.get("model_name") if isinstance(promote, dict) else None
    return name if isinstance(name, str) else registry.DEFAULT_LINEAGE


# --- loading ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """One loaded model: its registry entry, contract and compiled request path."""

    role: str
    entry: dict[str, Any]
    contract: dict[str, Any]
    compiled: CompiledModel
    transformed: np.ndarray  # the online table through this model's preprocessing

    @property
    def version(self) -> str:
        return str(self.entry["version"])


@dataclass(frozen=True)
class Bundle:
    """Everything a request needs; swapped as one reference on reload."""

    champion: Served
    challenger: Served | None
    row_of: dict[str, int]
    online: pd.DataFrame
    online_as_of: str | None
    loaded_at: float = field(default_factory=time.time)


def _load_model(entry: dict[str, Any], role: str, online: pd.DataFrame) -> Served:
    path = registry.verified_artifact(entry)  # sha256 checked; nothing else is unpickled
    contract_path = registry.contract_file(entry)
    if not contract_path.exists():
        raise ChurnError(f"{contract_path}: feature contract of version {entry['version']} absent")
    contract = json.loads(contract_path.read_text())
    names = [f["name"] for f in contract["features"]]
    missing = [n for n in names if n not in online.columns]
    if missing:
        raise ChurnError(f"online features lack {missing[:5]} required by version "
                         f"{entry['version']}")  # fmt: skip
    pipeline = modelfile.load(path)
    sample = online.sample(n=min(len(online), 500), random_state=0)
    compiled = compile_pipeline(pipeline, sample)
    if compiled is None:
        raise ChurnError(f"version {entry['version']}: pipeline shape not supported by fastpath")
    num, cat = compiled.encode(online)
    return Served(role, entry, contract, compiled, compiled.transform(num, cat))


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


def _online_table(settings: Settings, entry: dict[str, Any]) -> tuple[pd.DataFrame, str | None]:
    """The online features and their snapshot date: CHURN_FEATURES, else what promote
    published here (file mode), else the champion's run on the tracking server."""
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
        online = pd.read_parquet(path)
        spec_path = path.parent / "features.json"
        spec = json.loads(spec_path.read_text()) if spec_path.exists() else {}
    return online.drop_duplicates("user_id").reset_index(drop=True), spec.get("online_as_of")


def load_bundle(settings: Settings) -> Bundle:
    """Read the registry and features; raise ChurnError with the reason when not servable."""
    entry = champion_entry(settings)
    online, online_as_of = _online_table(settings, entry)
    champion = _load_model(entry, registry.CHAMPION, online)
    challenger = None
    if settings.canary_fraction > 0 or settings.shadow:
        ch = challenger_entry(settings, entry)
        if ch is not None:
            try:
                challenger = _load_model(ch, registry.CHALLENGER, online)
            except ChurnError as exc:
                log.warning("challenger not loaded: %s", exc)
    row_of = {str(uid): i for i, uid in enumerate(online["user_id"])}
    return Bundle(champion, challenger, row_of, online, online_as_of)


# --- metrics ---------------------------------------------------------------------------


SCORE_BOUNDS = tuple(i / 10 for i in range(1, 10))


def observe_batch(histogram: Histogram, scores: np.ndarray) -> None:
    """Add a whole batch to a histogram child in one numpy pass (a thousand `observe` calls
    cost as much as the model on a batch). Buckets hold per-bucket counts, `le` semantics."""
    counts = np.bincount(np.searchsorted(SCORE_BOUNDS, scores, side="left"),
                         minlength=len(SCORE_BOUNDS) + 1)  # fmt: skip
    for bucket, count in zip(histogram._buckets, counts.tolist(), strict=True):
        if count:
            bucket.inc(count)
    histogram._sum.inc(float(np.sum(scores)))


class Metrics:
    """The app's Prometheus metrics. Under `churn serve --workers N` (PROMETHEUS_MULTIPROC_DIR
    set before the workers import prometheus_client) every worker writes its values to
    shared files and /metrics sums them, whichever worker answers."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._info_labels: list[tuple[str, str, str]] = []
        r = self.registry
        self.requests = Counter("churn_http_requests", "HTTP requests", ["route", "status"],
                                registry=r)  # fmt: skip
        self.latency = Histogram(
            "churn_http_request_seconds", "Request latency", ["route"], registry=r,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )  # fmt: skip
        self.errors = Counter("churn_http_errors", "Responses with status >= 500, and exceptions",
                              ["route", "kind"], registry=r)  # fmt: skip
        self.scores = Histogram("churn_prediction_score", "Predicted churn probability",
                                ["role"], registry=r, buckets=SCORE_BOUNDS)  # fmt: skip
        self.predictions = Counter("churn_predictions", "Predictions by model",
                                   ["model_version", "role"], registry=r)  # fmt: skip
        self.model_info = Gauge("churn_model_info", "Loaded model (value 1), per worker",
                                ["role", "version", "sha256"], registry=r,
                                multiprocess_mode="liveall")  # fmt: skip
        self.reloads = Counter("churn_reloads", "Reload attempts", ["result"], registry=r)
        self.shadow_delta = Histogram(
            "churn_shadow_score_delta", "Challenger minus champion score (shadow)", registry=r,
            buckets=(-0.5, -0.2, -0.1, -0.05, -0.01, 0.01, 0.05, 0.1, 0.2, 0.5),
        )  # fmt: skip
        self.shadow_agreement = Counter("churn_shadow_agreement", "Shadow decisions agreeing",
                                        ["agree"], registry=r)  # fmt: skip

    def loaded(self, bundle: Bundle) -> None:
        for labels in self._info_labels:  # 0, not removed: a shared file keeps what was set
            self.model_info.labels(*labels).set(0)
        served = [s for s in (bundle.champion, bundle.challenger) if s is not None]
        self._info_labels = [(s.role, s.version, s.entry["sha256"][:12]) for s in served]
        for labels in self._info_labels:
            self.model_info.labels(*labels).set(1)

    def exposition(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)
            return generate_latest(merged)
        return generate_latest(self.registry)


# --- request models ------------------------------------------------------------------


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str | None = Field(None, min_length=1, max_length=128)
    features: dict[str, Any] | None = None

    @model_validator(mode="after")
    def exactly_one(self) -> PredictRequest:
        if (self.user_id is None) == (self.features is None):
            raise ValueError("send exactly one of user_id or features")
        return self


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_ids: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = None
    records: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def exactly_one(self) -> BatchRequest:
        if (self.user_ids is None) == (self.records is None):
            raise ValueError("send exactly one of user_ids or records")
        return self


class Prediction(BaseModel):
    user_id: str | None
    churn_probability: float
    churn: bool
    threshold: float
    model_version: str
    model_role: str
    as_of: str | None
    request_id: str


# --- input validation against the feature contract -----------------------------------


def _invalid(field_path: list[Any], message: str, rule: str) -> HTTPException:
    return HTTPException(422, detail=[{"loc": ["body", *field_path], "msg": message,
                                       "type": rule}])  # fmt: skip


def validate_record(record: dict[str, Any], contract: dict, where: list[Any]) -> dict[str, Any]:
    """Check one feature record against the contract; 422 names the first bad field.

    Policy: every feature is required (null only where training saw nulls); numbers must
    be finite and within the observed training range widened by its span on both sides
    (so [min - span, max + span]); categories must be ones seen in training; booleans are
    true/false or 0/1. Unknown fields are refused.
    """
    features = {f["name"]: f for f in contract["features"]}
    unknown = sorted(set(record) - set(features))
    if unknown:
        raise _invalid([*where, unknown[0]], f"unknown feature(s) {unknown[:5]}", "unknown")
    missing = [n for n in features if n not in record]
    if missing:
        raise _invalid([*where, missing[0]], f"missing feature(s) {missing[:5]}", "missing")
    clean: dict[str, Any] = {}
    for name, spec in features.items():
        value = record[name]
        loc = [*where, name]
        if value is None:
            if not spec.get("nullable"):
                raise _invalid(loc, "must not be null", "not_null")
            clean[name] = None
            continue
        kind = spec["kind"]
        if kind == "category":
            if not isinstance(value, str):
                raise _invalid(loc, "expected a string category", "type")
            open_levels = spec.get("unseen_levels") == "infrequent"  # a capped high-cardinality one
            if not open_levels and value not in spec["categories"]:
                raise _invalid(loc, f"unknown category; allowed {spec['categories']}", "category")
            clean[name] = value
            continue
        if kind == "bool":
            if isinstance(value, bool) or value in (0, 1):
                clean[name] = float(value)
                continue
            raise _invalid(loc, "expected true/false", "type")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _invalid(loc, "expected a number", "type")
        try:
            value = float(value)  # an int of 400 digits does not fit a float
        except OverflowError:
            raise _invalid(loc, "too large for a number", "range") from None
        if not math.isfinite(value):
            raise _invalid(loc, "must be finite (no NaN or infinity)", "finite")
        if value < 0 and spec.get("non_negative"):
            raise _invalid(loc, "must not be negative (it never was in training)", "non_negative")
        lo, hi = spec.get("min"), spec.get("max")
        if lo is not None and hi is not None:
            span = max(hi - lo, 1.0)
            if not lo - span <= value <= hi + span:
                raise _invalid(loc, f"out of range [{lo - span:g}, {hi + span:g}] "
                                    f"(training saw [{lo:g}, {hi:g}])", "range")  # fmt: skip
        clean[name] = float(value)
    return clean


# --- the app ---------------------------------------------------------------------------


def _bucket(user_id: str) -> float:
    """A stable position in [0, 1) for a user id (same in every process)."""
    digest = hashlib.sha256(user_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class RequestContext:
    """Pure ASGI middleware: request id, body size limit, metrics and one access-log line."""

    def __init__(self, app: Any, state: Any) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        settings: Settings = self.state.settings
        metrics: Metrics = self.state.metrics
        if settings.run_dir is not None and getattr(self.state, "reload_lock", None):
            await follow_reload(self.state, settings)
        status = {"code": 500}
        length = headers.get(b"content-length")
        too_large = (
            length is not None and length.isdigit() and int(length) > settings.max_body_bytes
        )
        body = None if too_large else await self._read_body(receive, settings.max_body_bytes)
        if body is None:  # over the limit, declared or while reading a chunked body
            await self._reply(send, 413, {"detail": f"body over {settings.max_body_bytes} bytes"},
                              request_id)  # fmt: skip
            status["code"] = 413
        else:
            replayed = {"done": False}

            async def replay_receive() -> dict:
                if not replayed["done"]:
                    replayed["done"] = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()  # disconnect notices after the body

            async def send_with_id(message: dict) -> None:
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                    message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
                await send(message)

            try:
                await self.app(scope, replay_receive, send_with_id)
            except Exception:
                metrics.errors.labels(self._route(scope), "exception").inc()
                raise
        elapsed = time.perf_counter() - started
        route = self._route(scope)
        metrics.requests.labels(route, str(status["code"])).inc()
        metrics.latency.labels(route).observe(elapsed)
        if status["code"] >= 500:
            metrics.errors.labels(route, "status").inc()
        access_log.info(json.dumps({"request_id": request_id, "method": scope.get("method"),
                                    "path": scope.get("path"), "status": status["code"],
                                    "ms": round(elapsed * 1000, 3)}))  # fmt: skip

    @staticmethod
    async def _read_body(receive: Callable, limit: int) -> bytes | None:
        """The whole request body, or None once it exceeds `limit` (chunked bodies too:
        read here, the limit gives 413 instead of the parser's generic 400)."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    def _route(scope: dict) -> str:
        route = scope.get("route")
        return getattr(route, "path", None) or "unmatched"

    @staticmethod
    async def _reply(send: Callable, code: int, body: dict, request_id: str) -> None:
        payload = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": code,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode()),
                                (b"x-request-id", request_id.encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": payload})


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app factory (uvicorn: `churn.serve:create_app --factory`)."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.reload_lock = asyncio.Lock()
        app.state.reload_seen = _signal_key(settings)
        try:
            bundle = await asyncio.to_thread(load_bundle, settings)
            _install(app.state, bundle)
            log.info("serving version %s (sha256 %s…), %d online users",
                     bundle.champion.version, bundle.champion.entry["sha256"][:12],
                     len(bundle.row_of))  # fmt: skip
        except ChurnError as exc:
            app.state.not_ready = str(exc)
            log.error("not ready: %s", exc)
        poller = None
        if settings.poll_seconds > 0:
            poller = asyncio.create_task(_poll(app, settings))
        yield
        if poller is not None:
            poller.cancel()

    app = FastAPI(
        title="StreamFlow churn API",
        version="1",
        lifespan=lifespan,
        # the body limit answers any route (RequestContext), so every route declares it
        responses={413: {"description": "request body over CHURN_MAX_BODY_BYTES"}},
        description="Churn probability for StreamFlow users, served from the registry's champion.",
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.bundle = None
    app.state.not_ready = "starting"
    app.add_middleware(RequestContext, state=app.state)
    _routes(app, settings)
    return app


def _install(state: Any, bundle: Bundle) -> None:
    state.bundle = bundle  # one reference swap: in-flight requests keep the old bundle
    state.not_ready = None
    state.metrics.loaded(bundle)


async def _reload(state: Any, settings: Settings, announce: bool = True) -> tuple[bool, str]:
    async with state.reload_lock:
        try:
            bundle = await asyncio.to_thread(load_bundle, settings)
        except ChurnError as exc:
            state.metrics.reloads.labels("failed").inc()
            log.error("reload failed, keeping the current model: %s", exc)
            return False, str(exc)
        _install(state, bundle)
        state.metrics.reloads.labels("ok").inc()
        log.info("reloaded: serving version %s", bundle.champion.version)
        if announce and settings.run_dir is not None:
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
    await _reload(state, settings, announce=False)


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
    while True:
        await asyncio.sleep(settings.poll_seconds)
        current = await asyncio.to_thread(_champion_marker, settings)
        if current is not None and current != seen:
            seen = current
            await _reload(app.state, settings)


def _bundle(request: Request) -> Bundle:
    bundle = request.app.state.bundle
    if bundle is None:
        raise HTTPException(503, detail=f"not ready: {request.app.state.not_ready}")
    return bundle


def _route_model(bundle: Bundle, user_id: str | None, settings: Settings) -> Served:
    canary = bundle.challenger is not None and user_id is not None and settings.canary_fraction > 0
    if canary and _bucket(user_id) < settings.canary_fraction:
        return bundle.challenger
    return bundle.champion


def _answer(
    request: Request, bundle: Bundle, served: Served, user_id: str | None, score: float,
) -> dict[str, Any]:  # fmt: skip
    threshold = float(served.contract.get("threshold", 0.5))
    metrics: Metrics = request.app.state.metrics
    metrics.predictions.labels(served.version, served.role).inc()
    metrics.scores.labels(served.role).observe(score)
    return {
        "user_id": user_id,
        "churn_probability": round(score, 6),
        "churn": score >= threshold,
        "threshold": threshold,
        "model_version": served.version,
        "model_role": served.role,
        "as_of": served.entry.get("as_of"),
        "request_id": request.scope["state"]["request_id"],
    }


def _shadow(request: Request, bundle: Bundle, served: Served, score: float, row) -> None:
    """Score the challenger too (never returned): record the delta and agreement."""
    challenger = bundle.challenger
    if challenger is None or served is challenger:
        return
    other = float(row(challenger))
    metrics: Metrics = request.app.state.metrics
    metrics.predictions.labels(challenger.version, "shadow").inc()
    metrics.shadow_delta.observe(other - score)
    threshold = float(served.contract.get("threshold", 0.5))
    metrics.shadow_agreement.labels(str((other >= threshold) == (score >= threshold))).inc()


NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"description": "not ready: no model or features loaded (the reason is in detail)"}
}


def _routes(app: FastAPI, settings: Settings) -> None:
    @app.get("/health")
    async def health() -> dict[str, str]:
        """200 while the process lives."""
        return {"status": "ok"}

    @app.get("/ready", responses={503: {"description": "model or features not loaded"}})
    async def ready(request: Request) -> JSONResponse:
        """200 once model and features are loaded, 503 with the reason otherwise."""
        bundle = request.app.state.bundle
        if bundle is None:
            return JSONResponse({"status": "not_ready", "reason": request.app.state.not_ready},
                                status_code=503)  # fmt: skip
        return JSONResponse({"status": "ready", "model_version": bundle.champion.version})

    @app.get("/model", responses=NOT_READY)
    async def model(request: Request) -> dict[str, Any]:
        """The served model: registry entry, metrics and lineage."""
        bundle = _bundle(request)
        e = bundle.champion.entry
        keys = ("model_name", "version", "alias", "sha256", "as_of", "model", "metrics", "run_id",
                "model_uri", "git_commit", "data_sha256", "decided_at", "reason")  # fmt: skip
        out = {k: e.get(k) for k in keys}
        out["champion_from"] = settings.champion_from
        out["online_as_of"] = bundle.online_as_of
        out["n_online_users"] = len(bundle.row_of)
        out["features"] = [f["name"] for f in bundle.champion.contract["features"]]
        out["challenger"] = None
        if bundle.challenger is not None:
            out["challenger"] = {"version": bundle.challenger.version,
                                 "sha256": bundle.challenger.entry["sha256"],
                                 "canary_fraction": settings.canary_fraction,
                                 "shadow": settings.shadow}  # fmt: skip
        return out

    @app.get("/features/{user_id}", responses={404: {"description": "unknown user"}, **NOT_READY})
    async def features(user_id: str, request: Request) -> dict[str, Any]:
        """The online features of one user."""
        bundle = _bundle(request)
        row = bundle.row_of.get(user_id)
        if row is None:
            raise HTTPException(404, detail=f"no online features for user_id {user_id!r}")
        record = bundle.online.iloc[row].to_dict()
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in record.items()}  # fmt: skip

    @app.post("/predict", responses={404: {"description": "unknown user"}, **NOT_READY})
    async def predict(body: PredictRequest, request: Request) -> Prediction:
        """Churn probability for a user id (online features) or for a feature record."""
        bundle = _bundle(request)
        if body.user_id is not None:
            row = bundle.row_of.get(body.user_id)
            if row is None:
                names = [f["name"] for f in bundle.champion.contract["features"]]
                return JSONResponse(  # type: ignore[return-value]
                    {"detail": f"no online features for user_id {body.user_id!r}; "
                               "send them as `features`", "missing_features": names},
                    status_code=404,
                )  # fmt: skip
            served = _route_model(bundle, body.user_id, settings)

            def score_of(s: Served) -> float:
                return float(s.compiled.predict_transformed(s.transformed[row : row + 1])[0])

        else:
            served = bundle.champion
            clean = validate_record(body.features or {}, served.contract, ["features"])
            frame = pd.DataFrame([clean])

            def score_of(s: Served) -> float:
                num, cat = s.compiled.encode(frame)
                return float(s.compiled.predict_encoded(num, cat)[0])

        score = score_of(served)
        if settings.shadow:
            _shadow(request, bundle, served, score, score_of)
        return _answer(request, bundle, served, body.user_id, score)  # type: ignore[return-value]

    @app.post("/predict/batch", responses={413: {"description": "batch or body too large"},
                                           **NOT_READY})  # fmt: skip
    async def predict_batch(body: BatchRequest, request: Request) -> dict[str, Any]:
        """Many user ids or feature records (at most CHURN_MAX_BATCH) scored by the champion."""
        bundle = _bundle(request)
        items = body.user_ids if body.user_ids is not None else body.records
        if len(items or []) > settings.max_batch:
            raise HTTPException(413, detail=f"batch of {len(items)} over the limit "
                                            f"{settings.max_batch}")  # fmt: skip
        served = bundle.champion
        unknown: list[str] = []
        if body.user_ids is not None:
            rows = [bundle.row_of.get(uid) for uid in body.user_ids]
            unknown = [uid for uid, r in zip(body.user_ids, rows, strict=True) if r is None]
            ids = [uid for uid, r in zip(body.user_ids, rows, strict=True) if r is not None]
            index = np.array([r for r in rows if r is not None], dtype=int)
            scores = (served.compiled.predict_transformed(served.transformed[index])
                      if len(index) else np.zeros(0))  # fmt: skip
        else:
            records = [validate_record(r, served.contract, ["records", i])
                       for i, r in enumerate(body.records or [])]  # fmt: skip
            ids = [None] * len(records)
            if records:
                num, cat = served.compiled.encode(pd.DataFrame(records))
                scores = served.compiled.predict_encoded(num, cat)
            else:
                scores = np.zeros(0)
        threshold = float(served.contract.get("threshold", 0.5))
        metrics: Metrics = request.app.state.metrics
        metrics.predictions.labels(served.version, served.role).inc(len(scores))
        observe_batch(metrics.scores.labels(served.role), scores)
        rounded, decided = np.round(scores, 6).tolist(), (scores >= threshold).tolist()
        payload = {
            "predictions": [
                {"user_id": uid, "churn_probability": p, "churn": c}
                for uid, p, c in zip(ids, rounded, decided, strict=True)
            ],
            "unknown_user_ids": unknown,
            "threshold": threshold,
            "model_version": served.version,
            "as_of": served.entry.get("as_of"),
            "request_id": request.scope["state"]["request_id"],
        }
        # orjson: FastAPI's generic encoder costs more than the model on a 1 000-row batch
        return Response(orjson.dumps(payload), media_type="application/json")  # type: ignore[return-value]

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics(request: Request) -> Response:
        """Prometheus metrics."""
        return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    reload_responses: dict[int | str, dict[str, Any]] = {
        401: {"description": "bad or missing bearer token"},
        404: {"description": "reload disabled (no CHURN_ADMIN_TOKEN)"},
        409: {"description": "reload failed; the old model keeps serving"},
    }

    @app.post("/admin/reload", responses=reload_responses)
    async def reload(request: Request) -> dict[str, Any]:
        """Re-read champion.json and swap model and features atomically (bearer token)."""
        if not settings.admin_token:
            raise HTTPException(404, detail="reload is disabled: set CHURN_ADMIN_TOKEN")
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        if not hmac.compare_digest(token.encode(), settings.admin_token.encode()):
            raise HTTPException(401, detail="bad or missing bearer token")
        ok, info = await _reload(request.app.state, settings)
        if not ok:
            raise HTTPException(409, detail=f"reload failed, still serving the previous "
                                            f"model: {info}")  # fmt: skip
        return {"status": "reloaded", "model_version": info}
