"""Hosts for the multi-host tests: network namespaces joined by a bridge in the `lb`
namespace (no route out), real processes started in them. Needs root and iproute2."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import env, sh


def netns_refused(prefix: str) -> str | None:
    """Why `ip netns` cannot be used here, or None."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    probe = f"{prefix}probe"
    result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if result.returncode != 0:
        return f"`ip netns add` refused: {result.stderr.strip() or result.returncode}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def netns_marks(prefix: str, test: str) -> list:
    """pytestmark of a multi-host test: slow, and skipped (said on stderr too) where
    `ip netns` is refused."""
    refused = netns_refused(prefix)
    if refused:
        print(f"{test}: skipped: {refused}", file=sys.stderr)
    return [pytest.mark.slow, pytest.mark.skipif(refused is not None, reason=str(refused))]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Topology:
    """The namespaces (`hosts`: name -> address on one /24, plus `lb` at `lb_address`
    holding the bridge), their processes, and commands run on one host with `host_env`."""

    def __init__(
        self,
        root: Path,
        prefix: str,
        hosts: dict[str, str],
        lb_address: str,
        host_env: dict[str, str] | None = None,
        client: str | None = None,
    ) -> None:
        self.root = root
        self.prefix = prefix
        self.hosts = hosts
        self.lb_address = lb_address
        self.host_env = host_env or {}
        self.client_script = client
        self.procs: dict[str, subprocess.Popen] = {}
        self.names: list[str] = []

    def ns(self, host: str) -> str:
        return f"{self.prefix}{host}"

    def build(self) -> None:
        lb = self.ns("lb")
        ip("netns", "add", lb)
        self.names.append(lb)
        ip("-n", lb, "link", "set", "lo", "up")
        ip("-n", lb, "link", "add", "br0", "type", "bridge")
        ip("-n", lb, "addr", "add", f"{self.lb_address}/24", "dev", "br0")
        ip("-n", lb, "link", "set", "br0", "up")
        for host, address in self.hosts.items():
            name = self.ns(host)
            ip("netns", "add", name)
            self.names.append(name)
            ip("-n", name, "link", "set", "lo", "up")
            ip("-n", lb, "link", "add", f"v{host}", "type", "veth", "peer", "name", "eth0",
               "netns", name)  # fmt: skip
            ip("-n", lb, "link", "set", f"v{host}", "master", "br0", "up")
            ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
            ip("-n", name, "link", "set", "eth0", "up")

    def command(self, host: str, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns(host), *args]

    def run(self, host: str, cwd: Path, *args: str, check: bool = True,
            extra_env: dict | None = None) -> subprocess.CompletedProcess:  # fmt: skip
        return sh(cwd, *self.command(host, *args), check=check,
                  extra_env={**self.host_env, **(extra_env or {})})  # fmt: skip

    def start(self, key: str, host: str, cwd: Path, *args: str,
              extra_env: dict | None = None) -> subprocess.Popen:  # fmt: skip
        with open(self.root / f"{key}.log", "ab") as log:  # the child keeps its own copy
            proc = subprocess.Popen(self.command(host, *args), cwd=cwd, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**env(), **self.host_env,
                                         **(extra_env or {})})  # fmt: skip
        self.procs[key] = proc
        return proc

    def stop(self, key: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(key, None)
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def client(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """The client script in the test's own namespace (lb)."""
        assert self.client_script, "this topology has no client script"
        return sh(self.root, *self.command("lb", sys.executable, self.client_script, *args),
                  check=check)  # fmt: skip

    def log(self, key: str) -> str:
        path = self.root / f"{key}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def teardown(self) -> None:
        for key in list(self.procs):
            self.stop(key)
        for name in self.names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
