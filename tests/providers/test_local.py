"""LocalProvider: server processes on loopback, ready by handshake, never left behind."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from openenv_gym.errors import AuthenticationError, ConnectError, ServerStartError
from openenv_gym.providers.local import LocalProvider, read_token_fd
from openenv_gym.ws.handshake import probe


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


def _cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        return cmdline.read().decode().split("\0")


def test_local_provider_token_stays_out_of_argv_environment_and_files(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = "tok-3f9c1b2e"
    monkeypatch.setenv("OPENENV_GYM_TOKEN", "the-clients-own-token")
    with LocalProvider(["CartPole-v1"], token=token) as provider:
        pid, url = provider.pids[0], provider.urls[0]
        argv = _cmdline(pid)
        assert not any(token in arg for arg in argv)
        with open(f"/proc/{pid}/environ", "rb") as environ:
            assert b"OPENENV_GYM_TOKEN" not in environ.read()
        # The pipe it read the token from is closed: nothing in the server still holds it.
        fd = argv[argv.index("--token-fd") + 1]
        assert not os.path.exists(f"/proc/{pid}/fd/{fd}")
        assert "CartPole-v1" in probe(url, token=token).specs
        with pytest.raises(AuthenticationError):
            probe(url, token="the-clients-own-token")
        with pytest.raises(AuthenticationError):
            probe(url, token="guess")


def test_local_provider_restart_hands_the_token_over_again() -> None:
    token = "tok-restart"
    with LocalProvider(["CartPole-v1"], token=token) as provider:
        url = provider.restart(0)
        assert not any(token in arg for arg in _cmdline(provider.pids[0]))
        assert "CartPole-v1" in probe(url, token=token).specs
        with pytest.raises(AuthenticationError):
            probe(url)


def test_read_token_fd_reads_the_pipe_to_its_end_and_closes_it() -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, b"s3cret\n")
    os.close(write_end)
    assert read_token_fd(str(read_end)) == "s3cret"
    with pytest.raises(OSError):
        os.fstat(read_end)


@pytest.mark.parametrize("payload", [b"", b"  \n", b"x" * 4097])
def test_read_token_fd_refuses_an_empty_or_oversized_token(payload: bytes) -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, payload)
    os.close(write_end)
    with pytest.raises(argparse.ArgumentTypeError, match=f"fd {read_end} must give a token"):
        read_token_fd(str(read_end))


def test_serve_refuses_a_token_fd_that_is_not_open() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "openenv_gym", "serve", "CartPole-v1", "--token-fd", "97"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--token-fd: cannot read a token from fd 97" in result.stderr


def test_start_servers_rejects_an_unknown_provider_name() -> None:
    from openenv_gym.providers import start_servers

    with pytest.raises(ValueError, match="'local', 'docker', 'ray' or a Provider, got 'k8s'"):
        start_servers(["CartPole-v1"], provider="k8s")  # type: ignore[arg-type]


def test_start_servers_borrows_a_provider_instance_without_closing_it() -> None:
    from openenv_gym import RemoteVectorEnv

    with LocalProvider(["CartPole-v1"], num_servers=2, token="borrowed-token") as provider:
        with RemoteVectorEnv("CartPole-v1", 4, provider=provider) as env:
            assert env.urls == provider.urls
            env.reset(seed=0)
        probe(provider.urls[0], token="borrowed-token")  # still up: the caller owns it
