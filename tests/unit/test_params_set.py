"""`churn params set`: params.yaml changed in place, comments and quoting kept, validated."""

from __future__ import annotations

import shutil

import pytest
import yaml
from typer.testing import CliRunner

from churn.cli import app
from churn.errors import ChurnError
from churn.params import load_params, parse_assignments, update_params_file
from tests.conftest import REPO_ROOT


@pytest.fixture
def params_file(tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy(REPO_ROOT / "params.yaml", path)
    return path


def test_nothing_to_set_leaves_the_file_byte_identical(params_file):
    before = params_file.read_text()
    update_params_file(params_file, {})
    assert params_file.read_text() == before


def test_set_changes_only_those_lines_and_keeps_comments_and_quotes(params_file):
    before = params_file.read_text().splitlines()
    changes = ["as_of=2024-04-30", "train.hist_gb.max_depth=3", "ingest.synthetic.n_users=1500"]
    update_params_file(params_file, parse_assignments(changes))
    after = params_file.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert len(changed) == 3
    as_of_line = next(b for _, b in changed if b.startswith("as_of"))
    assert as_of_line.startswith('as_of: "2024-04-30"') and "# training snapshot" in as_of_line
    assert yaml.safe_load(params_file.read_text())["as_of"] == "2024-04-30"  # a string, not a date
    params = load_params(params_file)
    assert params.train.hist_gb.max_depth == 3 and params.ingest.synthetic.n_users == 1500


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("as_of=2024-13-01", "key 'as_of' breaks rule 'iso_date'"),
        ("train.model=xgboost", "key 'train.model' breaks rule 'literal_error'"),
        ("train.no_such_key=1", "no key 'train.no_such_key'"),
        ("as_of", "expected KEY=VALUE"),
    ],
)
def test_bad_changes_name_the_key_and_leave_the_file_untouched(params_file, assignment, message):
    before = params_file.read_text()
    with pytest.raises(ChurnError, match=message):
        update_params_file(params_file, parse_assignments([assignment]))
    assert params_file.read_text() == before


def test_cli(params_file):
    result = CliRunner().invoke(
        app, ["params", "set", "--params", str(params_file), "train.model=random_forest"]
    )
    assert result.exit_code == 0, result.output
    assert load_params(params_file).train.model == "random_forest"
    bad = CliRunner().invoke(app, ["params", "set", "--params", str(params_file), "nope=1"])
    assert bad.exit_code == 1 and "no key 'nope'" in bad.output
