from typer.testing import CliRunner

from churn import __version__
from churn.cli import app

runner = CliRunner()
STAGES = ["ingest", "prepare", "train", "evaluate"]


def test_help_lists_every_stage_and_each_has_help():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in STAGES:
        assert command in result.output
        sub = runner.invoke(app, [command, "--help"])
        assert sub.exit_code == 0 and "--params" in sub.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_missing_params_file_is_one_line_and_exit_1(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["prepare"])
    assert result.exit_code == 1
    assert "params.yaml: not found" in result.output
    assert "Traceback" not in result.output


def test_stage_without_its_inputs_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("as_of: '2024-01-31'\n")
    result = runner.invoke(app, ["train", "--no-mlflow"])
    assert result.exit_code == 1
    assert "run `churn prepare` first" in result.output


def test_flags_read_as_flags_in_help():
    """Help once showed `--dry-run <bool>`, which reads as if a value were expected."""
    for command in (["promote"], ["monitor"], ["registry", "verify"]):
        sub = runner.invoke(app, [*command, "--help"])
        assert sub.exit_code == 0
        assert "<bool>" not in sub.output
    assert "--dry-run " in runner.invoke(app, ["promote", "--help"]).output
