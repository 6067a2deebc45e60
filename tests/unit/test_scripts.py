"""The setup scripts work from any folder."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import REPO_ROOT


def test_requirements_hold_only_pins_so_they_install_from_any_folder():
    lines = [line for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]  # fmt: skip
    assert lines and all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[A-Za-z0-9_.+\-]+", x) for x in lines)


def test_env_sh_finds_the_repo_from_another_folder(tmp_path):
    script = f"source {REPO_ROOT / 'scripts/env.sh'} && echo $PATH"
    out = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    assert out.split(":")[0] == str(REPO_ROOT / ".venv" / "bin")
