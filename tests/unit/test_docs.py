"""The docs: the site builds with --strict, its references come from the code, the README
is a short front door whose links resolve, and its tour is the tested script's."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from churn import reference
from churn.params import Params
from tests.conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    mkdocs = Path(sys.executable).parent / "mkdocs"
    result = subprocess.run([str(mkdocs), "build", "--strict", "-d", str(out)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def leaf_keys(model: type, prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and hasattr(sub, "model_fields"):
            keys += leaf_keys(sub, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_mkdocs_builds_strict_with_the_generated_references_and_benchmark_tables(site):
    params_page = (site / "reference" / "params" / "index.html").read_text()
    for key in leaf_keys(Params):
        assert f"<code>{key}</code>" in params_page, key
    cli_page = (site / "reference" / "cli" / "index.html").read_text()
    for command in ("churn ingest", "churn registry show", "churn rollback", "churn team up"):
        assert f"<code>{command}</code>" in cli_page, command
    benchmarks = (site / "benchmarks" / "index.html").read_text()
    first_row = next(line for line in (REPO_ROOT / "benchmarks/results/pipeline.md")
                     .read_text().splitlines() if line.startswith("| 7,043"))  # fmt: skip
    assert first_row.split("|")[2].strip() in benchmarks  # a number from the results file
    tour = re.sub(r"<[^>]+>", "", (site / "getting-started" / "index.html").read_text())
    assert "churn rollback --reason" in tour  # scripts/tour included, not copied


def test_the_params_reference_follows_the_model_it_is_generated_from():
    rows = {row[0]: row for row in reference.params_rows(Params)}
    assert set(rows) == set(leaf_keys(Params))
    assert rows["train.model"][2] == f'`"{Params().train.model}"`'
    assert rows["promote.min_roc_auc"][3] == "≥ 0.0, ≤ 1.0"
    assert all(row[4] for row in rows.values()), [k for k, r in rows.items() if not r[4]]


def test_the_cli_reference_is_each_commands_help():
    text = reference.cli_reference()
    assert text.count("Usage: churn") == len(re.findall(r"^#+ `churn", text, re.M)) >= 20
    assert "Usage: churn rollback [OPTIONS]" in text and "--reason" in text


def test_readme_is_a_front_door_whose_links_resolve():
    assert len(README.splitlines()) <= 150
    links = re.findall(r"\]\(((?!https?:)[^)#]+)", README)
    assert links
    for link in links:
        assert (REPO_ROOT / link).exists(), link
    assert README.index("scripts/bootstrap") < README.index("scripts/test") < 1500


def test_every_tour_command_of_the_readme_is_in_the_tested_tour_script_in_order():
    block = README.split("## Journey 1", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    script = (REPO_ROOT / "scripts" / "tour").read_text()
    position = 0
    for command in commands:
        head = command.split(" --reason")[0]  # the script states its own reason
        found = script.find(head, position)
        assert found >= 0, f"README tour command not in scripts/tour (in order): {command}"
        position = found


def test_pre_commit_config_is_valid_and_runs_ruff():
    pre_commit = Path(sys.executable).parent / "pre-commit"
    result = subprocess.run([str(pre_commit), "validate-config", ".pre-commit-config.yaml"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ruff check" in (REPO_ROOT / ".pre-commit-config.yaml").read_text()
