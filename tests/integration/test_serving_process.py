"""`churn serve` as a real uvicorn process on a free loopback port, after a real
`dvc repro`: HTTP contract, a bounded load test with a rollback + reload in the middle,
and a schemathesis run over the OpenAPI schema (no server errors)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.conftest import CHAMPION_JSON
from tests.helpers import BIN, dvc, env, free_port, make_repo, set_param, sh, wait_until_ok

pytestmark = pytest.mark.slow

TOKEN = "integration-token"


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """Two champions in history: a weak one (version 1), then the default (version 2)."""
    repo = make_repo(tmp_path_factory.mktemp("served-repo"), n_users=800, n_months=2)
    set_param(repo, "train.hist_gb.max_iter", 10)
    set_param(repo, "train.hist_gb.max_leaf_nodes", 2)
    dvc(repo, "repro")
    set_param(repo, "train.hist_gb.max_iter", 100)
    set_param(repo, "train.hist_gb.max_leaf_nodes", 6)
    dvc(repo, "repro")
    assert '"version": "2"' in (repo / CHAMPION_JSON).read_text()
    return repo


def start_server(repo: Path, workers: int, log_name: str, **extra_env: str):
    """`churn serve` on a free loopback port; yields its URL, stops it afterwards."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = repo / log_name
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(BIN / "churn"), "serve", "--port", str(port), "--workers", str(workers)],
            cwd=repo, stdout=log, stderr=subprocess.STDOUT,
            env={**env(), "CHURN_ADMIN_TOKEN": TOKEN, **extra_env}, start_new_session=True,
        )  # fmt: skip
        try:
            wait_until_ok(f"{url}/ready", proc, log_path, 90)
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(repo):
    yield from start_server(repo, 1, "serve.log")


def test_binds_loopback_and_answers_the_contract(server, repo):
    assert server.startswith("http://127.0.0.1:")
    model = httpx.get(f"{server}/model").json()
    assert model["version"] == "2"
    answer = httpx.post(f"{server}/predict", json={"user_id": "SF-0000001"}).json()
    assert answer["model_version"] == "2" and 0 <= answer["churn_probability"] <= 1
    assert httpx.post(f"{server}/predict", json={"user_id": "ghost"}).status_code == 404
    metrics = httpx.get(f"{server}/metrics").text
    assert 'churn_http_requests_total{route="/predict",status="200"}' in metrics
    assert '"request_id"' in (repo / "serve.log").read_text()  # structured access log


def test_load_with_a_rollback_and_reload_in_the_middle_has_no_failures(server, repo):
    # the load runs until 3 s after the reload answered (at most 120 s), however long the
    # rollback takes on a busy machine: a fixed window missed version 1 under load
    stop = [time.monotonic() + 120]
    outcomes: Counter = Counter()
    versions: Counter = Counter()
    lock = threading.Lock()

    def worker(seed: int) -> None:
        with httpx.Client(timeout=10) as client:
            for i in range(100_000):  # bounded by count and by time
                if time.monotonic() > stop[0]:
                    return
                uid = f"SF-{(seed * 97 + i) % 800 + 1:07d}"
                try:
                    r = client.post(f"{server}/predict", json={"user_id": uid})
                    key, version = r.status_code, r.json().get("model_version")
                except httpx.HTTPError as exc:
                    key, version = type(exc).__name__, None
                with lock:
                    outcomes[key] += 1
                    versions[version] += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    time.sleep(8)
    sh(repo, str(BIN / "churn"), "rollback", "--reason", "load test")
    reload = httpx.post(f"{server}/admin/reload", headers={"authorization": f"Bearer {TOKEN}"},
                        timeout=60)  # fmt: skip
    stop[0] = min(stop[0], time.monotonic() + 3)
    for t in threads:
        t.join()
    assert reload.status_code == 200 and reload.json()["model_version"] == "1"
    assert set(outcomes) == {200}, outcomes
    assert versions["2"] > 0 and versions["1"] > 0  # served both, swapped without a restart
    assert httpx.get(f"{server}/model").json()["version"] == "1"


def test_schemathesis_finds_no_server_error_and_only_declared_answers(server):
    """Every schemathesis check (`--checks all`): generated cases for each operation, then
    the hostile bodies of tests/api/test_hostile_table.py as explicit cases. Valid-looking
    data may still be refused by the feature contract (422), name an unknown user (404) or
    carry a bearer token that is not CHURN_ADMIN_TOKEN (401)."""
    import hypothesis
    import schemathesis
    from schemathesis.checks import CHECKS, load_all_checks

    from tests.api.test_hostile_table import PLACES, VALUES

    load_all_checks()
    checks = CHECKS.get_all()
    assert len(checks) >= 10  # every built-in check, not a chosen few
    config = schemathesis.Config.from_dict({"checks": {"positive_data_acceptance": {
        "expected-statuses": ["2XX", "401", "404", "413", "422"]}}})  # fmt: skip
    schema = schemathesis.openapi.from_url(f"{server}/openapi.json", config=config)
    checked = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @hypothesis.settings(max_examples=25, deadline=None, database=None,
                             suppress_health_check=list(hypothesis.HealthCheck))  # fmt: skip
        @hypothesis.given(case=operation.as_strategy())
        def check(case) -> None:
            case.call_and_validate(base_url=server, checks=checks)

        check()
        checked += 1
    assert checked == 8
    sent = 0
    for place, (path, template, _) in PLACES.items():
        operation = schema[path]["POST"]
        for value in VALUES.values():
            body = (template % value).encode()
            case = operation.Case(body=body, media_type="application/json")
            response = case.call_and_validate(base_url=server, checks=checks)
            assert response.status_code == 422, (place, value[:40], response.text[:200])
            sent += 1
    assert sent == len(PLACES) * len(VALUES)


def test_two_workers_one_reload_every_answer_from_the_new_version(repo):
    """One POST /admin/reload reaches one worker; the others follow its announcement before
    their next answer, and /metrics sums over both workers."""
    for url in start_server(repo, 2, "serve-workers.log"):
        before = httpx.get(f"{url}/model").json()["version"]
        other = "2" if before == "1" else "1"
        sh(repo, str(BIN / "churn"), "rollback", "--to", other, "--reason", "workers test")
        reload = httpx.post(f"{url}/admin/reload", headers={"authorization": f"Bearer {TOKEN}"},
                            timeout=60)  # fmt: skip
        assert reload.status_code == 200 and reload.json()["model_version"] == other
        versions: Counter = Counter()
        for i in range(100):  # new connections: uvicorn spreads them over both workers
            answer = httpx.post(f"{url}/predict", json={"user_id": f"SF-{i % 800 + 1:07d}"})
            versions[answer.json()["model_version"]] += 1
        assert versions == Counter({other: 100})
        text = httpx.get(f"{url}/metrics").text
        served = [line for line in text.splitlines()
                  if line.startswith("churn_predictions_total{")]  # fmt: skip
        assert sum(float(line.split()[-1]) for line in served) == 100  # both workers counted
        live = [line for line in text.splitlines()
                if line.startswith("churn_model_info{") and line.endswith(" 1.0")]  # fmt: skip
        assert len(live) == 2 and all(f'version="{other}"' in line for line in live), live


def _own_tmp(repo: Path, name: str) -> Path:
    """A TMPDIR of the test's own: the server's temp folder is the only one in it."""
    tmp = repo / name
    tmp.mkdir()
    return tmp


def _workers_of(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children
            if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]  # fmt: skip


def test_a_restarted_worker_serves_what_the_others_serve(repo):
    """champion.json changes without a reload, then a worker dies: the one uvicorn starts
    in its place serves what the other serves (it came back on the new file before), the
    dead worker's gauges leave /metrics, and SIGTERM removes the server's temp folder."""
    log_name = "serve-restart.log"
    tmp = _own_tmp(repo, "tmp-restart")
    servers = start_server(repo, 2, log_name, TMPDIR=str(tmp))
    url = next(servers)
    master = int(next(line.split("[")[1].split("]")[0]
                      for line in (repo / log_name).read_text().splitlines()
                      if "Started parent process" in line))  # fmt: skip
    assert [p.name[:12] for p in tmp.iterdir()] == ["churn-serve-"]
    try:
        served = httpx.get(f"{url}/model").json()["version"]
        other = "2" if served == "1" else "1"
        sh(repo, str(BIN / "churn"), "rollback", "--to", other, "--reason", "no reload")
        victim = _workers_of(master)[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while (repo / log_name).read_text().count("Application startup complete") < 3:
            assert time.monotonic() < deadline, (repo / log_name).read_text()[-2000:]
            time.sleep(0.5)
        versions: Counter = Counter()
        for i in range(40):  # new connections: the kernel spreads them over both workers
            answer = httpx.post(f"{url}/predict", json={"user_id": f"SF-{i % 800 + 1:07d}"})
            versions[answer.json()["model_version"]] += 1
        assert versions == Counter({served: 40}), versions
        text = httpx.get(f"{url}/metrics").text
        live = [line for line in text.splitlines()
                if line.startswith("churn_model_info{") and line.endswith(" 1.0")]  # fmt: skip
        assert len(live) == 2 and f'pid="{victim}"' not in text, live
    finally:
        servers.close()  # SIGTERM to the process group, as a service manager would
        sh(repo, str(BIN / "churn"), "rollback", "--to", served, "--reason", "restore")
    assert list(tmp.iterdir()) == []


def test_sigterm_removes_the_temp_folder_of_a_single_process_server(repo):
    """uvicorn re-raised SIGTERM after its shutdown and the default action killed `churn
    serve` before it removed its folder: /tmp/churn-serve-* piled up."""
    tmp = _own_tmp(repo, "tmp-single")
    servers = start_server(repo, 1, "serve-sigterm.log", TMPDIR=str(tmp))
    next(servers)
    assert [p.name[:12] for p in tmp.iterdir()] == ["churn-serve-"]
    servers.close()
    assert list(tmp.iterdir()) == []


def test_clients_that_hang_up_mid_answer_do_not_kill_the_server(server):
    """`churn` set SIGPIPE to its default action (quiet `| head`), which also applied to
    `churn serve`: a client closing its socket while answers were still being written
    killed the process without a word (seen at the end of a wrk run at concurrency 64;
    the old code died on the first of these hang-ups)."""
    import socket

    host, port = server.removeprefix("http://").split(":")
    pipelined = f"GET /openapi.json HTTP/1.1\r\nHost: {host}\r\n\r\n".encode() * 50
    for _ in range(20):  # bounded: 20 clients that ask for 50 answers and hang up
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(pipelined)
        time.sleep(0.05)
    time.sleep(1)
    assert httpx.get(f"{server}/health", timeout=5).status_code == 200
    answer = httpx.post(f"{server}/predict", json={"user_id": "SF-0000001"}, timeout=5)
    assert answer.status_code == 200


def _raw_exchange(server: str, request: bytes) -> bytes:
    """Send raw bytes, read until the server closes or 5 s pass (what came back)."""
    import socket

    host, port = server.removeprefix("http://").split(":")
    answer = b""
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        try:
            sock.sendall(request)
            while chunk := sock.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer and b"connection: close" not in answer.lower():
                    break
        except (ConnectionResetError, BrokenPipeError, TimeoutError):
            pass  # a refused 20 MB head: the server closed with bytes unread (RST)
    return answer


def test_a_header_over_the_limit_is_a_431_and_the_server_stays_up(server):
    """httptools buffered any header whole (20 MB was accepted); past 64 KiB of request
    line and headers the server now answers 431 and closes the connection."""
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: "
    refused = _raw_exchange(server, head + b"a" * 70_000 + b"\r\n\r\n")
    assert refused.startswith(b"HTTP/1.1 431 "), refused[:200]
    assert b"over 65536 bytes" in refused
    huge = _raw_exchange(server, head + b"a" * 20_000_000 + b"\r\n\r\n")
    assert huge == b"" or huge.startswith(b"HTTP/1.1 431 "), huge[:200]
    fine = _raw_exchange(server, head + b"a" * 30_000 + b"\r\nConnection: close\r\n\r\n")
    assert fine.startswith(b"HTTP/1.1 200 "), fine[:200]
    two = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Small: 1\r\n\r\n" * 2
    assert _raw_exchange(server, two).startswith(b"HTTP/1.1 200 ")  # keep-alive unharmed
    assert httpx.get(f"{server}/health", timeout=5).status_code == 200


async def _closed_loop(
    host: str, port: int, path: str, payload: dict, connections: int, total: int,
) -> list[int]:  # fmt: skip
    """`connections` keep-alive clients each posting `payload` one after the other until
    `total` answers came back; how many answers each connection got."""
    import asyncio
    import json

    body = json.dumps(payload).encode()
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body  # fmt: skip
    answered = [0] * connections

    async def client(i: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        while sum(answered) < total:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))  # fmt: skip
            await reader.readexactly(length)
            answered[i] += 1
        writer.close()

    await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(connections))), 300)
    return answered


@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
def test_every_connection_gets_its_turn_under_overload(server, path):
    """64 connections, one worker: each gets about the same number of answers. On uvloop
    (the default loop before) the least-served connection got 67-88 % of the mean and
    their requests waited: the c=64 p99 was 10-20 times p50 (benchmarks/serving); on
    asyncio's loop 98-99 %. Counts, not times: a fair server answers every connection
    once per round."""
    import asyncio

    host, port = server.removeprefix("http://").split(":")
    payload = ({"user_id": "SF-0000001"} if path == "/predict"
               else {"user_ids": [f"SF-{i:07d}" for i in range(1, 501)]})  # fmt: skip
    total = 64 * (150 if path == "/predict" else 50)
    answered = asyncio.run(_closed_loop(host, int(port), path, payload, 64, total))
    mean = sum(answered) / len(answered)
    assert min(answered) >= 0.95 * mean, sorted(answered)[:8]
