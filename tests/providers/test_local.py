"""LocalProvider: server processes on loopback, ready by handshake, never left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from openenv_gym.client.connection import probe
from openenv_gym.errors import ConnectError, ServerStartError
from openenv_gym.providers.local import LocalProvider


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes once it is not running.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_local_provider_starts_ready_servers_on_loopback() -> None:
    with LocalProvider(["CartPole-v1"], num_servers=2) as provider:
        assert len(provider.urls) == 2 and len(set(provider.urls)) == 2
        for url in provider.urls:
            assert url.startswith("ws://127.0.0.1:")
            assert "CartPole-v1" in probe(url).specs


def test_local_provider_close_stops_every_server() -> None:
    provider = LocalProvider(["CartPole-v1"], num_servers=2)
    pids, urls = provider.pids, provider.urls
    provider.close()
    provider.close()  # idempotent
    assert all(not _alive(pid) for pid in pids)
    with pytest.raises(ConnectError):
        probe(urls[0], timeout=1)


def test_local_provider_failure_carries_server_stderr() -> None:
    with pytest.raises(ServerStartError, match="cannot host 'NoSuchEnv-v9'"):
        LocalProvider(["NoSuchEnv-v9"])


def _spawn_owner(body: str) -> tuple[subprocess.Popen[str], int]:
    """Run a Python process that starts a provider and prints its server's pid."""
    script = "import sys\nfrom openenv_gym.providers.local import LocalProvider\n"
    script += textwrap.dedent(body)
    owner = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert owner.stdout is not None
    return owner, int(owner.stdout.readline())


def test_local_servers_stop_at_interpreter_exit_without_close() -> None:
    owner, pid = _spawn_owner(
        """
        provider = LocalProvider(["CartPole-v1"])
        print(provider.pids[0], flush=True)
        sys.stdin.read()
        """
    )
    assert _alive(pid)
    owner.communicate("", timeout=30)  # stdin closed: the owner exits normally
    assert _wait_gone(pid)


def test_local_servers_die_with_a_killed_owner() -> None:
    owner, pid = _spawn_owner(
        """
        provider = LocalProvider(["CartPole-v1"])
        print(provider.pids[0], flush=True)
        sys.stdin.read()
        """
    )
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait(timeout=10)
    assert _wait_gone(pid)
