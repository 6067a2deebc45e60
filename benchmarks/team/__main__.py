"""Time for a fresh clone to serve the champion: retrain (today's default) vs team mode.

    python benchmarks/team

Three fresh clones of this repo's HEAD, each until `churn serve` answers /ready:
  retrain  the embedded SQLite store: `dvc repro` rebuilds every output, promote restores
  first    team mode's first clone: `churn team up` (PostgreSQL + mlflow server on
           loopback), `dvc repro` against it, `churn team push` to a shared-folder remote
  pulled   team mode's next clone: `churn team pull`, `dvc repro` (nothing runs), serve
           (model, contract and online features fetched through the server)
The served sha256 must be the same in all three. Results: benchmarks/results/team.{json,md}.
Everything runs in a temp folder; the servers are stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
BIN = ROOT / ".venv" / "bin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(cwd: Path, *args: str, env: dict) -> float:
    started = time.perf_counter()
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(
            f"{' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        )
    return time.perf_counter() - started


def serve_until_ready(cwd: Path, env: dict) -> tuple[float, str]:
    """Seconds from `churn serve` to /ready, and the served sha256."""
    port = free_port()
    started = time.perf_counter()
    with open(cwd / "serve.log", "w") as log:
        proc = subprocess.Popen([str(BIN / "churn"), "serve", "--port", str(port)], cwd=cwd,
                                env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.perf_counter() - started > 180:
                raise SystemExit(f"serve never got ready:\n{(cwd / 'serve.log').read_text()}")
            time.sleep(0.05)
        ready = time.perf_counter() - started
        sha = httpx.get(f"http://127.0.0.1:{port}/model", timeout=5).json()["sha256"]
        return ready, sha
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def clone(work: Path, name: str) -> tuple[Path, float]:
    target = work / name
    started = time.perf_counter()
    subprocess.run(["git", "clone", "-q", str(ROOT), str(target)], check=True)
    return target, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    base = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    base.update(PATH=f"{BIN}{os.pathsep}{base.get('PATH', '')}", MLFLOW_DISABLE_TELEMETRY="true",
                DO_NOT_TRACK="true")  # fmt: skip
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="churn-team-bench-", dir="/tmp") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # the postgres user reaches the team folder

        repo, cloned = clone(work, "retrain")
        repro = run(repo, str(BIN / "dvc"), "repro", env=base)
        ready, sha = serve_until_ready(repo, base)
        rows["retrain"] = {"clone_s": cloned, "dvc_repro_s": repro, "serve_ready_s": ready,
                           "sha256": sha}  # fmt: skip
        print(f"retrain: repro {repro:.1f} s, ready {ready:.1f} s", flush=True)

        team_dir = work / "team"
        port, pg_port = free_port(), free_port()
        up = run(work, str(BIN / "churn"), "team", "up", "--dir", str(team_dir), "--port",
                 str(port), "--pg-port", str(pg_port), env=base)  # fmt: skip
        uri = f"http://127.0.0.1:{port}"
        team_env = {**base, "MLFLOW_TRACKING_URI": uri}
        remote = work / "remote"
        try:
            repo, cloned = clone(work, "first")
            run(repo, str(BIN / "dvc"), "remote", "add", "--local", "-d", "team", str(remote),
                env=team_env)  # fmt: skip
            repro = run(repo, str(BIN / "dvc"), "repro", env=team_env)
            push = run(repo, str(BIN / "churn"), "team", "push", env=team_env)
            ready, first_sha = serve_until_ready(repo, team_env)
            rows["first"] = {"team_up_s": up, "clone_s": cloned, "dvc_repro_s": repro,
                             "push_s": push, "serve_ready_s": ready,
                             "sha256": first_sha}  # fmt: skip
            print(f"first: up {up:.1f} s, repro {repro:.1f} s, push {push:.1f} s", flush=True)

            repo, cloned = clone(work, "pulled")
            run(repo, str(BIN / "dvc"), "remote", "add", "--local", "-d", "team", str(remote),
                env=team_env)  # fmt: skip
            pull = run(repo, str(BIN / "churn"), "team", "pull", env=team_env)
            started = time.perf_counter()
            out = subprocess.run([str(BIN / "dvc"), "repro"], cwd=repo, env=team_env,
                                 capture_output=True, text=True, check=True)  # fmt: skip
            repro = time.perf_counter() - started
            if "Running stage" in out.stdout:
                raise SystemExit(f"the pulled clone reran stages:\n{out.stdout}")
            ready, pulled_sha = serve_until_ready(repo, team_env)
            rows["pulled"] = {"clone_s": cloned, "pull_s": pull, "dvc_repro_s": repro,
                              "stages_run": 0, "serve_ready_s": ready,
                              "sha256": pulled_sha}  # fmt: skip
            print(f"pulled: pull {pull:.1f} s, repro {repro:.1f} s, ready {ready:.1f} s",
                  flush=True)  # fmt: skip
        finally:
            subprocess.run([str(BIN / "churn"), "team", "down", "--dir", str(team_dir)], env=base,
                           capture_output=True)  # fmt: skip
            state = json.loads((team_dir / "team.json").read_text())
            if not Path(state["pg_data"]).is_relative_to(work):  # team.py's /tmp fallback
                shutil.rmtree(Path(state["pg_data"]).parent, ignore_errors=True)

    shas = {row["sha256"] for row in rows.values()}
    if len(shas) != 1:
        raise SystemExit(f"the clones served different models: {shas}")
    for row in rows.values():
        row["to_serving_s"] = round(sum(v for k, v in row.items() if k.endswith("_s")), 2)
        for key, value in row.items():
            if key.endswith("_s"):
                row[key] = round(value, 2)
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "rows": rows,
              "sha256": shas.pop()}  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "team.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "team.md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    rows = result["rows"]
    lines = [
        "# A fresh clone to a serving champion: retrain vs team mode",
        "",
        f"`python benchmarks/team` on {result['machine']}; every clone served sha256 "
        f"`{result['sha256'][:12]}…`. Seconds.",
        "",
        "| fresh clone | git clone | team up | pull | dvc repro | push | serve to /ready | total |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = {"retrain": "retrain (embedded store, today)",
             "first": "team: first clone (trains, restores into the server, pushes)",
             "pulled": "team: next clone (`churn team pull`, nothing reruns)"}  # fmt: skip
    for key, row in rows.items():
        cells = [row.get(k) for k in ("clone_s", "team_up_s", "pull_s", "dvc_repro_s", "push_s",
                                      "serve_ready_s", "to_serving_s")]  # fmt: skip
        lines.append(f"| {names[key]} | " + " | ".join("—" if c is None else f"{c}" for c in cells)
                     + " |")  # fmt: skip
    speedup = rows["retrain"]["to_serving_s"] / rows["pulled"]["to_serving_s"]
    lines += ["", f"The pulled clone serves {speedup:.1f}× sooner than a retrain.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
