"""The pure ASGI middleware: request id, body size limit, metrics, one access-log line."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from churn.serving.metrics import Metrics
from churn.serving.reload import follow_reload
from churn.serving.settings import Settings

log = logging.getLogger("churn.serve")
access_log = logging.getLogger("churn.access")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # an X-Request-ID we echo; else a new one


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
