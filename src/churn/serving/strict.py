"""Strict request bodies: JSON as RFC 8259 has it (no NaN, no Infinity, no lone surrogate,
at most 1 024 levels deep), refused with a 422 that names where, and error answers that
never echo what was sent (so they can always be serialised)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

LONE_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_MSG = 300  # characters of an error message: a pydantic message quotes limits, not input


class StrictJSONRequest(Request):
    """`await request.json()` through orjson: what it refuses, Python's json accepted."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """Routes whose JSON body is parsed strictly; a refused body is a 422 naming the path
    (`["body", "features", "monthly_fee"]`) and the rule, before FastAPI sees it."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()
        if self.body_field is None:  # a route without a body reads none
            return handler

        async def strict_handler(request: Request) -> Response:
            request = StrictJSONRequest(request.scope, request.receive)
            if _is_json(request):
                body = await request.body()
                if body:
                    try:
                        await request.json()
                    except orjson.JSONDecodeError as exc:
                        return invalid_body(*explain(body, exc))
            return await handler(request)

        return strict_handler


def _is_json(request: Request) -> bool:
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip()
    return kind == "application/json" or kind.endswith("+json")


def explain(body: bytes, error: orjson.JSONDecodeError) -> tuple[list[Any], str, str]:
    """Where and why a body orjson refused is not JSON: the path of the first non-finite
    number, lone surrogate or too-large integer when Python's lenient parser can read it,
    else the character position orjson gave."""
    try:
        lenient = json.loads(body)
    except (ValueError, RecursionError):  # not JSON at all, or deeper than Python's stack
        return ["body", error.pos], f"not valid JSON: {error.msg}", "json_invalid"
    try:
        for path, problem, kind in _problems(lenient, []):
            return ["body", *path], problem, kind
    except RecursionError:
        pass
    return ["body", error.pos], f"not valid JSON: {error.msg}", "json_invalid"


def _problems(value: Any, path: list[Any]) -> Iterator[tuple[list[Any], str, str]]:
    """The values JSON (RFC 8259) has no room for, depth first, with their paths."""
    if isinstance(value, float) and not math.isfinite(value):
        yield path, "must be finite (no NaN or Infinity)", "finite"
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**64:
        yield path, "integer too large for a number", "range"
    elif isinstance(value, str) and LONE_SURROGATE.search(value):
        yield path, "a lone UTF-16 surrogate is not text", "surrogate"
    elif isinstance(value, dict):
        for key, item in value.items():
            if LONE_SURROGATE.search(key):
                yield [*path, _safe(key)], "a lone UTF-16 surrogate in a field name", "surrogate"
            yield from _problems(item, [*path, _safe(key)])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _problems(item, [*path, index])


def _safe(text: Any) -> Any:
    """A path element or message that JSON can carry: lone surrogates as \\uXXXX escapes,
    long texts cut (a field name can be the attacker's megabyte)."""
    if not isinstance(text, str):
        return text if isinstance(text, int) else str(text)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= MAX_MSG else text[:MAX_MSG] + "…"


def invalid_body(loc: list[Any], msg: str, kind: str, status: int = 422) -> JSONResponse:
    return JSONResponse({"detail": [{"loc": [_safe(p) for p in loc], "msg": _safe(msg),
                                     "type": kind}]}, status_code=status)  # fmt: skip


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 without the `input` it echoes (a value the client sent, which may be
    huge or not serialisable): path, message and rule only."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [{"loc": [_safe(p) for p in e.get("loc", ())], "msg": _safe(e.get("msg", "")),
               "type": _safe(e.get("type", "invalid"))} for e in errors[:20]]  # fmt: skip
    return JSONResponse({"detail": detail}, status_code=422)
