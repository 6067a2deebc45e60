"""Inputs that used to give a 500 or an undeclared status: each now gets a declared 4xx
(or a clean not-ready) naming the problem."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from churn.serve import create_app
from tests.api.conftest import TOKEN, settings

AUTH = {"authorization": f"Bearer {TOKEN}"}


def asgi_get(app, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict]:
    """One raw ASGI request (a test client would refuse to send non-UTF-8 headers)."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
             "query_string": b"", "headers": headers, "scheme": "http", "http_version": "1.1",
             "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1), "root_path": ""}  # fmt: skip
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], dict(start["headers"])


def test_a_non_utf8_request_id_gets_a_fresh_one(in_served):
    app = create_app(settings())
    status, headers = asgi_get(app, "/health", [(b"x-request-id", b"\xff\xfe\x00")])
    assert status == 200
    assert len(headers[b"x-request-id"]) == 32  # a new uuid4 hex, not the bytes sent
    status, headers = asgi_get(app, "/health", [(b"x-request-id", b"req-42")])
    assert headers[b"x-request-id"] == b"req-42"  # a well-formed one is echoed


def test_a_400_digit_integer_is_a_422_naming_the_feature(client):
    record = client.get("/features/SF-0000001").json()
    record.pop("user_id")
    record["monthly_fee"] = 10**400
    answer = client.post("/predict", content=json.dumps({"features": record}),
                         headers={"content-type": "application/json"})  # fmt: skip
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "features", "monthly_fee"]


def test_a_chunked_body_over_the_limit_is_413(in_served):
    def chunks():
        for _ in range(40):
            yield b"x" * 100_000  # 4 MB, no content-length: sent chunked

    with TestClient(create_app(settings(max_body_bytes=1_000_000))) as c:
        answer = c.post("/predict", content=chunks(), headers={"content-type": "application/json"})
        assert answer.status_code == 413 and "body over" in answer.json()["detail"]
        small = c.post("/predict", content=iter([b'{"user_id": ', b'"SF-0000001"}']),
                       headers={"content-type": "application/json"})  # fmt: skip
        assert small.status_code == 200  # a chunked body under the limit is replayed whole


def test_user_ids_are_bounded_in_length(client):
    answer = client.post("/predict/batch", json={"user_ids": ["x" * 129]})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"][:3] == ["body", "user_ids", 0]


def test_malformed_json_is_a_declared_422(client):
    answer = client.post("/predict", content=b"{bad json",
                         headers={"content-type": "application/json"})  # fmt: skip
    assert answer.status_code == 422


@pytest.mark.parametrize("content", ["1", "null", '"a string"', "[]"])
def test_a_champion_json_that_is_not_an_object_keeps_the_server_up(content, tmp_path, in_served):
    registry_copy = tmp_path / "registry" / "streamflow-churn"
    shutil.copytree(in_served / "registry" / "streamflow-churn", registry_copy)
    good = (registry_copy / "champion.json").read_text()
    (registry_copy / "champion.json").write_text(content)
    with TestClient(create_app(settings(registry_dir=registry_copy))) as c:
        ready = c.get("/ready")
        assert ready.status_code == 503 and "expected a JSON object" in ready.json()["reason"]
        failed = c.post("/admin/reload", headers=AUTH)
        assert failed.status_code == 409 and "expected a JSON object" in failed.json()["detail"]
        (registry_copy / "champion.json").write_text(good)
        assert c.post("/admin/reload", headers=AUTH).status_code == 200
        assert c.get("/ready").status_code == 200


@pytest.mark.parametrize("command", [["registry", "verify"], ["registry", "show"],
                                     ["rollback", "--reason", "x"]])  # fmt: skip
def test_registry_commands_say_what_is_wrong_with_champion_json(command, tmp_path, in_served):
    registry_copy = tmp_path / "registry" / "streamflow-churn"
    shutil.copytree(in_served / "registry" / "streamflow-churn", registry_copy)
    (registry_copy / "champion.json").write_text("null")
    (tmp_path / "params.yaml").write_text("random_state: 42\n")
    env = {**os.environ, "CHURN_REGISTRY_DIR": str(registry_copy.parent)}
    result = subprocess.run([sys.executable, "-m", "churn", *command], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "expected a JSON object" in result.stderr and "unexpected" not in result.stderr


def test_every_route_declares_what_it_can_answer(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            assert "413" in operation["responses"], (method, path)
    for path in ("/model", "/features/{user_id}"):
        assert "503" in paths[path]["get"]["responses"]
    assert {"404", "413", "422", "503"} <= set(paths["/predict"]["post"]["responses"])
    assert {"413", "422", "503"} <= set(paths["/predict/batch"]["post"]["responses"])
    assert {"401", "404", "409"} <= set(paths["/admin/reload"]["post"]["responses"])


def test_a_negative_fee_is_refused_though_inside_the_widened_range(client):
    record = client.get("/features/SF-0000001").json()
    record.pop("user_id")
    answer = client.post("/predict", json={"features": {**record, "monthly_fee": -50}})
    assert answer.status_code == 422
    detail = answer.json()["detail"][0]
    assert detail["loc"][-1] == "monthly_fee" and detail["type"] == "non_negative"
    assert (
        client.post("/predict", json={"features": {**record, "monthly_fee": 0}}).status_code == 200
    )
