"""The online table in PostgreSQL: real `churn team up` (PostgreSQL + `mlflow server`),
real `dvc repro` with `serve.online_store: postgres`, two real `churn serve` replicas in
alias mode in a clone with no data, looking users up by id.

They answer what the in-memory file store answers; after a 1 000 000-user table is
published and they reload, their memory is what it was with 600 users, while a file-store
replica of the same table grows by the table. A load that fails leaves the published
table in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from churn import online
from churn.serve import create_app
from churn.serving.settings import Settings
from tests.helpers import BIN, dvc, env, free_port, make_repo, set_param, sh, wait_until_ok

NAME = "streamflow-churn"
TOKEN = "online-store-token"
BIG = 1_000_000  # users of the published load-test table


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.fixture()
def team(tmp_path):
    """`churn team up` on free ports; the two exports it prints, torn down after."""
    team_dir = tmp_path / ".team"
    up = subprocess.run([str(BIN / "churn"), "team", "up", "--dir", str(team_dir), "--port",
                         str(free_port()), "--pg-port", str(free_port())],
                        capture_output=True, text=True, env=env(), timeout=300)  # fmt: skip
    assert up.returncode == 0, up.stderr
    exports = dict(line.removeprefix("export ").split("=", 1) for line in up.stdout.split("\n")
                   if line.startswith("export "))  # fmt: skip
    try:
        yield exports
    finally:
        subprocess.run([str(BIN / "churn"), "team", "down", "--dir", str(team_dir)],
                       capture_output=True, env=env())  # fmt: skip
        state = json.loads((team_dir / "team.json").read_text())
        if state["pg_data"].startswith("/tmp/churn-team-"):
            shutil.rmtree(Path(state["pg_data"]).parent, ignore_errors=True)


class Replica:
    def __init__(self, cwd: Path, log: Path, extra: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(BIN / "churn"), "serve", "--port", str(self.port)], cwd=cwd,
                env={**env(), "CHURN_ADMIN_TOKEN": TOKEN, **extra}, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def ready(self) -> None:
        wait_until_ok(f"{self.url}/ready", self.proc, self.log, 120)

    def reload(self) -> dict:
        answer = httpx.post(f"{self.url}/admin/reload", timeout=120,
                            headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
        assert answer.status_code == 200, answer.text
        return httpx.get(f"{self.url}/model", timeout=30).json()

    def scores(self, ids: list[str]) -> dict[str, float]:
        out = {}
        for start in range(0, len(ids), 1000):
            answer = httpx.post(f"{self.url}/predict/batch", timeout=60,
                                json={"user_ids": ids[start : start + 1000]})  # fmt: skip
            assert answer.status_code == 200, answer.text
            out.update({p["user_id"]: p["churn_probability"]
                        for p in answer.json()["predictions"]})  # fmt: skip
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def test_replicas_serve_from_postgres_with_memory_flat_in_the_users(team, tmp_path):
    extra = {"MLFLOW_TRACKING_URI": team["MLFLOW_TRACKING_URI"],
             "CHURN_ONLINE_DSN": team["CHURN_ONLINE_DSN"]}  # fmt: skip
    (tmp_path / "repo").mkdir()
    repo = make_repo(tmp_path / "repo", n_users=600, n_months=3)
    set_param(repo, "serve.online_store", "postgres")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "pipeline")
    first = dvc(repo, "repro", extra_env=extra)
    assert "promoted version 1" in first.stdout + first.stderr
    published = repo / "data" / "prepared" / "online_features.parquet"
    table = pd.read_parquet(published)
    ids = [str(u) for u in table["user_id"]]
    digest = hashlib.sha256(published.read_bytes()).hexdigest()

    # the in-memory file store of the same repo: what every answer must equal
    with contextlib.chdir(repo):
        settings = Settings(registry_dir=Path("registry") / NAME)
        with TestClient(create_app(settings)) as client:
            answer = client.post("/predict/batch", json={"user_ids": ids}).json()
            expected = {p["user_id"]: p["churn_probability"] for p in answer["predictions"]}
            some = ids[7]
            expected_features = client.get(f"/features/{some}").json()

    # two replicas in a clone with no data: the model from the alias, users from PostgreSQL
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    assert not (clone / "data" / "prepared").exists()
    store = {**extra, "CHURN_CHAMPION_FROM": "alias", "CHURN_ONLINE_STORE": "postgres"}
    replicas = [Replica(clone, tmp_path / f"replica-{i}.log", store) for i in (1, 2)]
    file_replica = None
    try:
        for r in replicas:
            r.ready()
        for r in replicas:
            model = httpx.get(f"{r.url}/model", timeout=30).json()
            assert model["online_store"] == {"kind": "postgres", "n_users": len(ids),
                                             "source": online.table_name(NAME, digest),
                                             "version": digest[:12],
                                             "as_of": model["online_as_of"]}  # fmt: skip
            assert model["version"] == "1" and model["online_as_of"] is not None
            assert r.scores(ids) == expected
            assert httpx.get(f"{r.url}/features/{some}").json() == expected_features
            unknown = httpx.post(f"{r.url}/predict", json={"user_id": "nobody"})
            assert unknown.status_code == 404 and "nobody" in unknown.text
        small_rss = [rss_mb(r.proc.pid) for r in replicas]

        # a 1 000 000-user table (the same rows under new ids), published by hand, reloaded
        big = pd.concat([table] * (BIG // len(table) + 1), ignore_index=True).iloc[:BIG].copy()
        big["user_id"] = [f"u{i:07d}" for i in range(BIG)]
        big_path = tmp_path / "big.parquet"
        big.to_parquet(big_path, index=False)
        sh(repo, str(BIN / "churn"), "publish", "--features", str(big_path), "--as-of",
           "2030-01-31", extra_env=extra)  # fmt: skip
        picked = list(np.random.default_rng(0).choice(BIG, 3000, replace=False))
        same_row = {big["user_id"][i]: str(table["user_id"][i % len(table)]) for i in picked}
        for r in replicas:
            model = r.reload()
            assert model["n_online_users"] == BIG and model["online_as_of"] == "2030-01-31"
            got = r.scores(list(same_row))
            assert got == {new: expected[old] for new, old in same_row.items()}
        big_rss = [rss_mb(r.proc.pid) for r in replicas]

        # a file-store replica of the same table holds it all
        in_memory = {"CHURN_FEATURES": str(big_path), "CHURN_ONLINE_STORE": "file"}
        file_replica = Replica(repo, tmp_path / "file-replica.log", in_memory)
        file_replica.ready()
        file_replica.scores(list(same_row)[:100])
        file_rss = rss_mb(file_replica.proc.pid)
        print(
            f"\nRSS MB: postgres replicas {small_rss} with {len(ids)} users, {big_rss} "
            f"with {BIG}; file store with {BIG}: {file_rss:.0f}"
        )
        for small, large in zip(small_rss, big_rss, strict=True):
            assert large - small < 25, f"RSS grew {large - small:.0f} MB with the users"
        assert file_rss - max(big_rss) > 250, "the file store's table should cost memory"

        # a load that fails (a NUL byte PostgreSQL's text refuses) moves nothing
        broken = big.iloc[:10].copy()
        broken["user_id"] = [f"x{i}" for i in range(10)]
        text_column = next(c for c in broken.columns[1:] if broken[c].dtype == object)
        broken[text_column] = "bad\x00value"
        broken.to_parquet(tmp_path / "broken.parquet", index=False)
        failed = sh(repo, str(BIN / "churn"), "publish", "--features",
                    str(tmp_path / "broken.parquet"), check=False, extra_env=extra)  # fmt: skip
        assert failed.returncode == 1
        assert "broken.parquet" in failed.stderr and "unchanged" in failed.stderr
        model = replicas[0].reload()
        assert model["n_online_users"] == BIG
    finally:
        for r in [*replicas, file_replica]:
            if r is not None:
                r.stop()
