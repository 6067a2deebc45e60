"""The committed dvc.lock matches the committed code and params: a change to a stage's
code or params must come with the `dvc repro` that it causes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from tests.conftest import REPO_ROOT


def lookup(params: dict, dotted: str):
    node = params
    for key in dotted.split("."):
        node = node[key]
    return node


def test_code_deps_in_dvc_lock_match_the_files():
    lock = yaml.safe_load((REPO_ROOT / "dvc.lock").read_text())
    stale = []
    for name, stage in lock["stages"].items():
        for dep in stage.get("deps", []):
            path = REPO_ROOT / dep["path"]
            if dep["path"].startswith("src/"):
                digest = hashlib.md5(Path(path).read_bytes()).hexdigest()
                if digest != dep["md5"]:
                    stale.append(f"{name}: {dep['path']}")
    assert not stale, f"dvc.lock is stale for {stale}: run `dvc repro` and commit dvc.lock"


def test_params_in_dvc_lock_match_params_yaml():
    lock = yaml.safe_load((REPO_ROOT / "dvc.lock").read_text())
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    stale = [
        f"{name}: {key}"
        for name, stage in lock["stages"].items()
        for key, value in stage.get("params", {}).get("params.yaml", {}).items()
        if lookup(params, key) != value
    ]
    assert not stale, f"dvc.lock is stale for {stale}: run `dvc repro` and commit dvc.lock"
