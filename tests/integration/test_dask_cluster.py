"""engine: dask on a cluster across hosts: network namespaces joined by a bridge.

  host s   `dask scheduler`
  host w1  `dask worker` (no nanny: a killed worker stays dead), 1 thread, --memory-limit
  host w2  the same
  host c   the client: `dvc repro` with CHURN_DASK_SCHEDULER=tcp://<s>:8786

The repo first runs the whole pipeline with engine: local. Then engine: dask: `dvc repro`
on c reruns ingest (its parts change form) and prepare, both on the cluster; prepare's
outputs are the local engine's bytes, so nothing after it runs (the model is the same).
While prepare runs, worker w1 is killed with SIGKILL after the first of its three
snapshots is written: the scheduler gives its work to w2 (dask recomputes the id ranges
w1 held), the run finishes, and data/ holds no half-written folder. Then train, evaluate
and score are forced to run again on what is left of the cluster (w2): their outputs are
the local engine's bytes. The workers run in their own folders: the parts they write land
in the repo through its absolute path, as on a shared filesystem. Every packet stays
inside these namespaces. Skipped, with the reason, only where `ip netns` is refused.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import BIN, dvc, make_repo, ran_stages, set_param
from tests.netns import Topology, netns_marks

PREFIX = f"sd{os.getpid() % 100000}"
HOSTS = {"s": "10.78.0.1", "w1": "10.78.0.2", "w2": "10.78.0.3", "c": "10.78.0.4"}
LB = "10.78.0.254"
SCHEDULER = f"tcp://{HOSTS['s']}:8786"

pytestmark = netns_marks(PREFIX, "test_dask_cluster")


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def lock_outs(repo: Path, stage: str) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for o in lock["stages"][stage]["outs"]}


@pytest.fixture()
def cluster(tmp_path):
    net = Topology(tmp_path, PREFIX, HOSTS, LB)
    try:
        net.build()
        net.start("scheduler", "s", tmp_path, str(BIN / "dask"), "scheduler", "--host",
                  HOSTS["s"], "--port", "8786", "--no-dashboard")  # fmt: skip
        for worker in ("w1", "w2"):
            home = tmp_path / worker
            home.mkdir()
            net.start(worker, worker, home, str(BIN / "dask"), "worker", SCHEDULER, "--host",
                      HOSTS[worker], "--name", worker, "--nthreads", "1", "--memory-limit",
                      "1GB", "--no-nanny", "--no-dashboard")  # fmt: skip
        waited = net.run("c", tmp_path, sys.executable, "-c",
                         "import sys; from distributed import Client; "
                         "Client(sys.argv[1], timeout=60).wait_for_workers(2, timeout=60)",
                         SCHEDULER, check=False)  # fmt: skip
        assert waited.returncode == 0, f"{waited.stderr}\n{net.log('w1')}\n{net.log('w2')}"
        yield net
    finally:
        net.teardown()


LATER = ("train", "evaluate", "score")  # after prepare (drift on dask: tests/pipeline)
OUTPUTS = ("data/prepared", "models", "data/scored", "reports")


def outputs(repo: Path) -> dict[str, str]:
    found = {}
    for folder in OUTPUTS:
        found.update({f"{folder}/{k}": v for k, v in digests(repo / folder).items()})
    return found


def test_dvc_repro_on_a_three_host_cluster_survives_a_worker_killed_mid_prepare(cluster, tmp_path):
    (tmp_path / "repo").mkdir()
    repo = make_repo(tmp_path / "repo", n_users=6000, n_months=3)
    first = dvc(repo, "repro")
    assert ran_stages(first)[-1] == "score"
    local = outputs(repo)
    local_outs = {s: lock_outs(repo, s) for s in ("prepare", *LATER)}

    set_param(repo, "engine", "dask")
    set_param(repo, "dask.partition_rows", 1000)  # six id ranges per table, pieces of 1000
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}",
           "CHURN_DASK_SCHEDULER": SCHEDULER, "MLFLOW_DISABLE_TELEMETRY": "true"}  # fmt: skip
    repro = subprocess.Popen(
        cluster.command("c", str(BIN / "dvc"), "repro"), cwd=repo, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, env=env,
    )  # fmt: skip
    lines, killed_at = [], None
    deadline = time.monotonic() + 600
    for line in repro.stdout:
        lines.append(line)
        if killed_at is None and "dask: joined snapshot" in line:
            os.killpg(cluster.procs["w1"].pid, signal.SIGKILL)  # mid-prepare: 2 of 3 to go
            cluster.procs["w1"].wait()
            killed_at = len(lines)
        assert time.monotonic() < deadline, "".join(lines[-40:])
    output = "".join(lines)
    assert repro.wait() == 0, output[-6000:]
    assert killed_at is not None, output[-4000:]
    after_kill = "".join(lines[killed_at:])
    assert after_kill.count("dask: joined snapshot") == 2, output[-4000:]
    assert cluster.procs["w1"].returncode == -signal.SIGKILL
    scheduler = (tmp_path / "scheduler.log").read_text()
    assert any("Remove worker" in x and "name: w1" in x for x in scheduler.splitlines())

    result = subprocess.CompletedProcess([], 0, output, "")
    assert ran_stages(result) == ["ingest", "prepare"], output[-4000:]  # the rest: unchanged
    assert "Stage 'train' didn't change" in output
    assert outputs(repo) == local
    parts = sorted(p.name for p in (repo / "data/raw/2024-01-31/users.parquet").iterdir())
    assert parts == [f"part-{i:05d}.parquet" for i in range(6)]
    assert not [p for p in (repo / "data").iterdir() if p.name.startswith(".")]

    # the stages after prepare, on the cluster (w2 alone now): the local engine's bytes
    later = subprocess.run(cluster.command("c", str(BIN / "dvc"), "repro", "-f", "-s", *LATER),
                           cwd=repo, text=True, capture_output=True, env=env)  # fmt: skip
    text = later.stdout + later.stderr
    assert later.returncode == 0, text[-6000:]
    assert ran_stages(later) == list(LATER)
    for done in ("dask: gathered", "dask: scored 6000 users in 6 partitions"):
        assert done in text, text[-4000:]
    assert text.count(f"dask: joining the cluster at {SCHEDULER}") == len(LATER)
    assert outputs(repo) == local
    assert {s: lock_outs(repo, s) for s in ("prepare", *LATER)} == local_outs
