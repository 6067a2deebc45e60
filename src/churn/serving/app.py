"""The app factory and its routes."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import numpy as np
import orjson
import pandas as pd
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
)

from churn import registry
from churn.errors import ChurnError
from churn.reasons import DEFAULT_TOP, MAX_TOP, top_reasons
from churn.serving.loading import Bundle, Served
from churn.serving.metrics import Metrics, observe_batch
from churn.serving.middleware import RequestContext
from churn.serving.reload import _poll, _reload, _signal_key, start
from churn.serving.settings import Settings
from churn.serving.strict import StrictJSONRoute, validation_error
from churn.serving.validation import BatchRequest, Prediction, PredictRequest, validate_record

log = logging.getLogger("churn.serve")


def _bucket(user_id: str) -> float:
    """A stable position in [0, 1) for a user id (same in every process)."""
    digest = hashlib.sha256(user_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app factory (uvicorn: `churn.serve:create_app --factory`)."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.reload_lock = asyncio.Lock()
        app.state.reload_seen = _signal_key(settings)
        try:
            # no local name for the bundle: this frame lives until shutdown and would keep
            # the first bundle (model and online table) through every reload
            await start(app.state, settings)
            log.info("serving version %s (sha256 %s…), %d online users",
                     app.state.bundle.champion.version,
                     app.state.bundle.champion.entry["sha256"][:12],
                     app.state.bundle.online.n_users)  # fmt: skip
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
        docs_url=None,  # FastAPI's own pages load Swagger UI and ReDoc from a CDN: _docs()
        redoc_url=None,
    )
    app.router.route_class = StrictJSONRoute  # before the routes: each one parses strictly
    app.add_exception_handler(RequestValidationError, validation_error)
    _docs(app)
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.bundle = None
    app.state.not_ready = "starting"
    app.add_middleware(RequestContext, state=app.state)
    _routes(app, settings)
    return app


DOCS_ASSETS = "/docs-assets"


def _docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc from the JavaScript and CSS that the fastapi-offline
    package ships: the pages name no external host, so they work without the internet."""
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from fastapi_offline.core import _STATIC_PATH

    app.mount(DOCS_ASSETS, StaticFiles(directory=_STATIC_PATH), name="docs-assets")
    favicon = f"{DOCS_ASSETS}/favicon.png"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> Response:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css", swagger_favicon_url=favicon,
            swagger_ui_parameters={"validatorUrl": None},  # its default asks swagger.io
        )  # fmt: skip

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> Response:
        return get_redoc_html(
            openapi_url=app.openapi_url, title=f"{app.title} - ReDoc",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js", redoc_favicon_url=favicon,
            with_google_fonts=False,
        )  # fmt: skip


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


Explain = Annotated[bool, Query(description="add each score's reasons (churn.reasons)")]
Top = Annotated[int, Query(ge=1, le=MAX_TOP, description="how many reasons per score")]


def _explanations(
    served: Served, rows: np.ndarray, values: Callable[[], list[list[Any]]], top: int
) -> list[dict[str, Any]]:
    """Per row: the model's score before calibration (`output`: log-odds or probability),
    the base, the `top` reasons and the sum of the other columns' contributions (`rest`):
    base + the reasons' contributions + rest = score."""
    try:
        explainer = served.explainer
    except ValueError as exc:  # an estimator without reasons
        raise HTTPException(501, detail=str(exc)) from None
    base, contributions = explainer.contributions(rows)
    picked = top_reasons(explainer, contributions, values(), top)
    scores = explainer.score(rows)
    out = []
    for i, reasons in enumerate(picked):
        listed = sum(r["contribution"] for r in reasons)
        out.append({"output": explainer.output, "score": float(scores[i]),
                    "base": float(base[i]), "reasons": reasons,
                    "rest": float(contributions[i].sum()) - listed})  # fmt: skip
    return out


# /admin/reload's bearer token (CHURN_ADMIN_TOKEN), declared in the OpenAPI schema; module
# level: the route's annotations are strings resolved against this module's globals
BEARER = HTTPBearer(auto_error=False, description="CHURN_ADMIN_TOKEN")

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
        # the run in this tracking store holding the bytes (as `churn registry show` names
        # it); champion.json's run is the deciding machine's, absent from a clone's store
        out["run_id"] = registry.local_run_id(e)
        out["decided_in_run"] = e.get("run_id")
        out["champion_from"] = settings.champion_from
        out["runtime"] = bundle.champion.runtime
        out["online_as_of"] = bundle.online.as_of
        out["n_online_users"] = bundle.online.n_users
        out["online_store"] = bundle.online.describe()
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
        found = bundle.online.find([user_id])
        if not found.ids:
            raise HTTPException(404, detail=f"no online features for user_id {user_id!r}")
        record = found.frame().iloc[0].to_dict()
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in record.items()}  # fmt: skip

    @app.post("/predict", responses={404: {"description": "unknown user"}, **NOT_READY},
              response_model_exclude_unset=True)  # fmt: skip
    async def predict(
        body: PredictRequest, request: Request, explain: Explain = False, top: Top = DEFAULT_TOP
    ) -> Prediction:
        """Churn probability for a user id (online features) or for a feature record;
        with `explain=true`, the `top` reasons (exact contributions per column)."""
        bundle = _bundle(request)
        if body.user_id is not None:
            found = bundle.online.find([body.user_id])
            if not found.ids:
                names = [f["name"] for f in bundle.champion.contract["features"]]
                return JSONResponse(  # type: ignore[return-value]
                    {"detail": f"no online features for user_id {body.user_id!r}; "
                               "send them as `features`", "missing_features": names},
                    status_code=404,
                )  # fmt: skip
            served = _route_model(bundle, body.user_id, settings)

            def rows_of(s: Served) -> np.ndarray:
                return s.rows(found)

            def values() -> list[list[Any]]:
                columns = list(served.explainer.columns)
                return found.frame()[columns].to_numpy(dtype=object).tolist()

        else:
            served = bundle.champion
            clean = validate_record(body.features or {}, served.contract, ["features"])

            def rows_of(s: Served) -> np.ndarray:
                return s.compiled.transform(*s.compiled.encode_record(clean))

            def values() -> list[list[Any]]:
                return [[clean[c] for c in served.explainer.columns]]

        def score_of(s: Served) -> float:
            return float(s.compiled.predict_transformed(rows_of(s))[0])

        score = score_of(served)
        if settings.shadow:
            _shadow(request, bundle, served, score, score_of)
        answer = _answer(request, bundle, served, body.user_id, score)
        if explain:
            (answer["explanation"],) = _explanations(served, rows_of(served), values, top)
        return answer  # type: ignore[return-value]

    @app.post("/predict/batch", responses={413: {"description": "batch or body too large"},
                                           **NOT_READY})  # fmt: skip
    async def predict_batch(
        body: BatchRequest, request: Request, explain: Explain = False, top: Top = DEFAULT_TOP
    ) -> dict[str, Any]:
        """Many user ids or feature records (at most CHURN_MAX_BATCH) scored by the champion;
        with `explain=true`, each with its `top` reasons."""
        bundle = _bundle(request)
        items = body.user_ids if body.user_ids is not None else body.records
        if len(items or []) > settings.max_batch:
            raise HTTPException(413, detail=f"batch of {len(items)} over the limit "
                                            f"{settings.max_batch}")  # fmt: skip
        served = bundle.champion
        unknown: list[str] = []
        if body.user_ids is not None:
            found = bundle.online.find(body.user_ids)
            ids, unknown = found.ids, found.unknown
            transformed = np.zeros((0, int(served.compiled.support.sum())))
            if ids:
                transformed = served.rows(found)

            def values() -> list[list[Any]]:
                columns = list(served.explainer.columns)
                return found.frame()[columns].to_numpy(dtype=object).tolist()

        else:
            records = [validate_record(r, served.contract, ["records", i])
                       for i, r in enumerate(body.records or [])]  # fmt: skip
            ids = [None] * len(records)
            transformed = np.zeros((0, int(served.compiled.support.sum())))
            if records:
                transformed = served.compiled.transform(*served.compiled.encode(
                    pd.DataFrame(records)))  # fmt: skip

            def values() -> list[list[Any]]:
                return [[r[c] for c in served.explainer.columns] for r in records]

        scores = (served.compiled.predict_transformed(transformed) if len(transformed)
                  else np.zeros(0))  # fmt: skip
        threshold = float(served.contract.get("threshold", 0.5))
        metrics: Metrics = request.app.state.metrics
        metrics.predictions.labels(served.version, served.role).inc(len(scores))
        observe_batch(metrics.scores.labels(served.role), scores)
        rounded, decided = np.round(scores, 6).tolist(), (scores >= threshold).tolist()
        predictions = [{"user_id": uid, "churn_probability": p, "churn": c}
                       for uid, p, c in zip(ids, rounded, decided, strict=True)]  # fmt: skip
        if explain and predictions:
            for one, why in zip(predictions, _explanations(served, transformed, values, top),
                                strict=True):  # fmt: skip
                one["explanation"] = why
        payload = {
            "predictions": predictions,
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
    async def reload(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> dict[str, Any]:
        """Re-read champion.json and swap model and features atomically (bearer token)."""
        if not settings.admin_token:
            raise HTTPException(404, detail="reload is disabled: set CHURN_ADMIN_TOKEN")
        token = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(token.encode(), settings.admin_token.encode()):
            raise HTTPException(401, detail="bad or missing bearer token")
        ok, info = await _reload(request.app.state, settings)
        if not ok:
            raise HTTPException(409, detail=f"reload failed, still serving the previous "
                                            f"model: {info}")  # fmt: skip
        return {"status": "reloaded", "model_version": info}
