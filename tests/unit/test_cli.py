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


def test_worker_listeners_share_the_port_spread_connections_and_set_nodelay():
    """`churn serve --workers N` gives each worker its own SO_REUSEPORT socket marked TCP:
    uvicorn's shared socket (proto 0) left Nagle on (every keep-alive answer waited ~44 ms
    for a delayed ACK) and let one worker accept a whole burst of connections."""
    import asyncio
    import socket

    from churn.cli import worker_listener
    from tests.helpers import free_port

    port = free_port()
    listeners = [worker_listener("127.0.0.1", port) for _ in range(2)]
    accepted: list[tuple[int, int]] = []

    async def main() -> None:
        def protocol(which: int):
            class Record(asyncio.Protocol):
                def connection_made(self, transport):
                    sock = transport.get_extra_info("socket")
                    accepted.append(
                        (which, sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                    )
                    transport.close()

            return Record

        loop = asyncio.get_running_loop()
        servers = [await loop.create_server(protocol(i), sock=s) for i, s in enumerate(listeners)]
        for _ in range(40):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
        for _ in range(200):
            if len(accepted) == 40:
                break
            await asyncio.sleep(0.01)
        for server in servers:
            server.close()

    asyncio.run(main())
    assert len(accepted) == 40
    assert all(nodelay for _, nodelay in accepted)
    assert {which for which, _ in accepted} == {0, 1}  # both workers got connections


def test_the_stage_log_carries_the_dask_workers_peaks(tmp_path, monkeypatch):
    """$CHURN_STAGE_LOG (benchmarks/pipeline): wall time and the stage's peak RSS, and after
    a stage on a dask cluster every worker's peak as churn.engine reported it."""
    import json

    from churn import cli, engine

    log = tmp_path / "stages.jsonl"
    monkeypatch.setenv("CHURN_STAGE_LOG", str(log))
    monkeypatch.setattr(engine, "worker_peaks_mb", {})
    cli._record_stage("train", 1.25)
    monkeypatch.setattr(engine, "worker_peaks_mb", {"tcp://w1": 812.5, "tcp://w2": 790.0})
    cli._record_stage("ingest", 2.5)
    local, on_dask = (json.loads(line) for line in log.read_text().splitlines())
    assert local["stage"] == "train" and local["wall_s"] == 1.25 and local["peak_rss_mb"] > 0
    assert "worker_peak_rss_mb" not in local
    assert on_dask["stage"] == "ingest" and on_dask["worker_peak_rss_mb"] == [812.5, 790.0]
