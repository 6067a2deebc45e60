"""Six corrupt champion.json files (issue 20): each is refused with one line by serve (503
at start with /ready saying why, 409 on reload with the old model kept), `registry
verify`, `registry show`, `rollback` and `promote`; none crashes and none grows memory by
50 MB (the old reader grew to 14 GB on a symlink to /dev/zero and recursed to death on
deep nesting). Each kind runs in its own process, which reports its peak memory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.api.conftest import TOKEN
from tests.conftest import REPO_ROOT, small_params

LINEAGE = "streamflow-churn"


def corrupt(kind: str, path: Path, good: Path) -> None:
    """Replace champion.json at `path` by a corrupt one of `kind`."""
    path.unlink()
    if kind == "deep_nesting":
        path.write_text("[" * 200_000 + "]" * 200_000)
    elif kind == "directory":
        path.mkdir()
        (path / "x").write_text("{}")
    elif kind == "symlink_to_dev_zero":
        path.symlink_to("/dev/zero")
    elif kind == "symlink_to_a_valid_copy":  # a free path: what it names is not reviewed
        path.symlink_to(good)
    elif kind == "fifo":  # reading one blocks forever
        os.mkfifo(path)
    elif kind == "over_the_size_cap":
        path.write_text(" " * 2_000_000 + good.read_text())
    else:
        raise AssertionError(kind)


KINDS = ("deep_nesting", "directory", "symlink_to_dev_zero", "symlink_to_a_valid_copy",
         "fifo", "over_the_size_cap")  # fmt: skip
RULES = {"deep_nesting": "nested deeper than", "directory": "is a directory",
         "symlink_to_dev_zero": "is a symlink", "symlink_to_a_valid_copy": "is a symlink",
         "fifo": "is a FIFO", "over_the_size_cap": "over the limit"}  # fmt: skip


def probe(root: str) -> None:
    """In a fresh process: serve and the CLI on the good registry (the memory baseline),
    then on each corrupt champion.json in turn; print what happened, and how far the peak
    memory rose during each kind, as JSON."""
    import resource

    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from churn.cli import app as cli
    from churn.serve import Settings, create_app

    os.chdir(root)
    champion = Path("registry") / LINEAGE / "champion.json"
    good = Path(root) / "good-champion.json"
    shutil.copy(champion, good)
    runner = CliRunner()
    commands = {"verify": ["registry", "verify"], "show": ["registry", "show"],
                "rollback": ["rollback", "--reason", "x"], "promote": ["promote"]}  # fmt: skip

    def run_all() -> dict:
        out = {}
        with TestClient(create_app(Settings(admin_token=TOKEN))) as c:
            out["ready"] = [c.get("/ready").status_code, c.get("/ready").json()]
            answer = c.post("/admin/reload", headers={"authorization": f"Bearer {TOKEN}"})
            out["reload"] = [answer.status_code, answer.json()]
        for name, args in commands.items():
            result = runner.invoke(cli, args)
            out[name] = [result.exit_code, result.output[-400:], repr(result.exception)]
        return out

    def peak() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB

    report = {"baseline": run_all()}
    for kind in KINDS:
        before = peak()
        corrupt(kind, champion, good)
        report[kind] = run_all()
        report[kind]["grew_kb"] = peak() - before
        if champion.is_dir():
            shutil.rmtree(champion)
        else:
            champion.unlink()
        shutil.copy(good, champion)
    print(json.dumps(report))


def copy_served(served_dir: Path, root: Path) -> None:
    """The served registry, store, data and MLflow database, in a folder of the test's."""
    for name in ("registry", "mlflow", "models", "data", "reports"):
        if (served_dir / name).exists():
            shutil.copytree(served_dir / name, root / name, symlinks=True)
    shutil.copy(served_dir / "mlflow.db", root / "mlflow.db")


@pytest.fixture(scope="module")
def probed(served_dir, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("corrupt") / "repo"
    copy_served(served_dir, root)
    (root / "params.yaml").write_text(yaml.safe_dump(small_params(**{
        "ingest.synthetic.n_users": 800}).model_dump()))  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
           "PYTHONPATH": str(REPO_ROOT)}  # fmt: skip
    code = f"from tests.api.test_corrupt_registry import probe; probe({str(root)!r})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=600, cwd=REPO_ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_good_registry_serves_and_verifies(probed):
    base = probed["baseline"]
    assert base["ready"][0] == 200 and base["reload"][0] == 200, base
    assert base["verify"][0] == 0 and base["show"][0] == 0, base


@pytest.mark.parametrize("kind", KINDS)
def test_a_corrupt_champion_json_is_refused_cleanly_everywhere(kind, probed):
    after, rule = probed[kind], RULES[kind]
    assert after["ready"][0] == 503 and rule in after["ready"][1]["reason"], after["ready"]
    assert after["reload"][0] == 409 and rule in after["reload"][1]["detail"], after["reload"]
    for name in ("verify", "show", "rollback", "promote"):
        code, output, exception = after[name]
        assert code == 1, (name, after[name])
        assert rule in output and "unexpected" not in output, (name, output)
        assert exception.startswith("SystemExit"), (name, exception)  # a clean exit
    assert after["grew_kb"] < 50_000, after["grew_kb"]


@pytest.fixture
def registry_copy(served_dir, tmp_path) -> Path:
    root = tmp_path / "repo"
    copy_served(served_dir, root)
    return root


def test_corrupt_history_lines_are_skipped_by_serving_and_reported_by_verify(
    registry_copy, monkeypatch
):
    """A truncated line made the whole server 503, a non-UTF-8 byte killed a CHURN_SHADOW
    start; now each is skipped with a warning and `registry verify` names it."""
    from fastapi.testclient import TestClient

    from churn import registry
    from churn.serve import Settings, create_app

    monkeypatch.chdir(registry_copy)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{registry_copy / 'mlflow.db'}")
    lineage = Path("registry") / LINEAGE
    history = lineage / "history.jsonl"
    good = history.read_bytes()
    history.write_bytes(good + b'{"action": "promote", "sha' + b"\n" + b'{"x": "\xff"}\n')
    with TestClient(create_app(Settings(admin_token=TOKEN, shadow=True))) as c:
        assert c.get("/ready").status_code == 200, c.get("/ready").text
        assert c.post("/predict", json={"user_id": "SF-0000001"}).status_code == 200
    assert len(registry.read_history(lineage)) == len(good.splitlines())
    problems = registry.verify(LINEAGE, root=lineage)
    lines = len(good.splitlines())
    assert any(f"history.jsonl:{lines + 1}: not valid JSON" in p for p in problems), problems
    assert any(f"history.jsonl:{lines + 2}: not valid JSON" in p for p in problems), problems
