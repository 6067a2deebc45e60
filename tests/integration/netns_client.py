"""The replica test's client, run inside the test's own network namespace (`ip netns exec`).

wait URL TIMEOUT            poll URL until 200 (exit 1 with the last error on timeout)
post URL TOKEN              POST with a bearer token; print status and body
load URL OUT STOP [C] [IDS] bounded load: C workers POST /predict by user id until the
                            file STOP exists; one JSON line per request in OUT
                            (start, end, status, model_version, upstream)
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import httpx


def wait(url: str, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return 0
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.2)
    print(f"{url}: not ready after {timeout_s:.0f} s ({last})", file=sys.stderr)
    return 1


def post(url: str, token: str) -> int:
    response = httpx.post(url, headers={"authorization": f"Bearer {token}"}, timeout=120)
    print(json.dumps({"status": response.status_code, "body": response.json()}))
    return 0 if response.status_code == 200 else 1


async def _worker(client: httpx.AsyncClient, url: str, ids: list[str], offset: int,
                  out, stop: Path) -> None:  # fmt: skip
    i = offset
    while not stop.exists():
        started = time.time()
        record = {"start": started, "status": 0, "model_version": None, "upstream": None}
        try:
            response = await client.post(url, json={"user_id": ids[i % len(ids)]})
            record["status"] = response.status_code
            record["upstream"] = response.headers.get("x-upstream")
            if response.status_code == 200:
                record["model_version"] = response.json()["model_version"]
        except httpx.HTTPError as exc:
            record["error"] = type(exc).__name__
        record["end"] = time.time()
        out.write(json.dumps(record) + "\n")
        i += 7
        await asyncio.sleep(0.01)  # bounded: at most ~100 requests/s per worker


async def load(url: str, out_path: Path, stop: Path, concurrency: int, ids: list[str]) -> int:
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        with open(out_path, "w", buffering=1) as out:
            await asyncio.gather(*(_worker(client, url, ids, k, out, stop)
                                   for k in range(concurrency)))  # fmt: skip
    return 0


def main(argv: list[str]) -> int:
    command, *args = argv
    if command == "wait":
        return wait(args[0], float(args[1]))
    if command == "post":
        return post(args[0], args[1])
    if command == "load":
        concurrency = int(args[3]) if len(args) > 3 else 8
        ids = args[4].split(",") if len(args) > 4 else ["SF-0000001"]
        return asyncio.run(load(args[0], Path(args[1]), Path(args[2]), concurrency, ids))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
