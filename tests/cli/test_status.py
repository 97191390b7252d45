"""``openenv-gym status``: the fleet table names every live session, Docker containers included."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

import openenv_gym
from openenv_gym.cli.status import status_url
from openenv_gym.providers.local import LocalProvider
from openenv_gym.testing.compliance._support import free_port
from openenv_gym.testing.optional import require_module

TOKEN = "status-s3cret"


def _status(*args: str) -> subprocess.CompletedProcess[str]:
    require_module("rich", family="status", install="pip install 'openenv-gym[status]'")
    command = [sys.executable, "-m", "openenv_gym", "status", "--once", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def servers() -> Iterator[LocalProvider]:
    with LocalProvider(["CartPole-v1", "FrozenLake-v1"], num_servers=2, token=TOKEN) as provider:
        yield provider


def test_status_url_maps_server_urls_to_their_status_document() -> None:
    assert status_url("ws://127.0.0.1:8765") == "http://127.0.0.1:8765/status.json"
    assert status_url("wss://example.org:443/") == "https://example.org:443/status.json"
    assert status_url("10.0.0.2:9000") == "http://10.0.0.2:9000/status.json"
    with pytest.raises(ValueError, match="ftp://x"):
        status_url("ftp://x")


def test_status_once_names_every_live_session_of_the_fleet(servers: LocalProvider) -> None:
    single = openenv_gym.RemoteEnv("CartPole-v1", url=servers.urls[0], token=TOKEN)
    vector = openenv_gym.RemoteVectorEnv("FrozenLake-v1", 4, urls=[servers.urls[1]], token=TOKEN)
    try:
        single.reset(seed=0)
        for _ in range(3):
            single.step(0)
        vector.reset(seed=0)
        vector.step(vector.action_space.sample())
        run = _status(*servers.urls, "--token", TOKEN)
    finally:
        single.close()
        vector.close()
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    cartpole = [line for line in lines if servers.urls[0] in line and "CartPole-v1 " in line]
    frozen = [line for line in lines if servers.urls[1] in line and "FrozenLake-v1" in line]
    assert any("binary" in line and " 3 " in line for line in cartpole), run.stdout
    assert any("binary" in line and " 4 " in line for line in frozen), run.stdout
    assert sum(" up " in line for line in lines) == 2, run.stdout


def test_status_once_shows_refusals_and_unreachable_servers_and_exits_1(
    servers: LocalProvider,
) -> None:
    dead = f"ws://127.0.0.1:{free_port()}"
    run = _status(servers.urls[0], dead, "--token", "wrong")
    assert run.returncode == 1
    rows = run.stdout.splitlines()
    assert "refused" in next(line for line in rows if dead in line).lower()
    assert "HTTP 401" in next(line for line in rows if servers.urls[0] in line)


@pytest.mark.docker
def test_status_docker_lists_the_containers_and_their_sessions(
    docker_image: str, containers_before: Any
) -> None:
    from openenv_gym.providers.docker import DockerProvider

    with DockerProvider(["CartPole-v1"], image=docker_image) as provider:
        with openenv_gym.RemoteEnv(
            "CartPole-v1", url=provider.urls[0], token=provider.token
        ) as env:
            env.reset(seed=0)
            for _ in range(7):
                env.step(1)
            run = _status("--docker")
            # The image carries the metrics extra: its server answers /metrics too.
            request = urllib.request.Request(
                provider.urls[0].replace("ws://", "http://") + "/metrics",
                headers={"Authorization": f"Bearer {provider.token}"},
            )
            with urllib.request.urlopen(request, timeout=10) as reply:
                metrics = reply.read().decode()
        short = provider.container_ids[0][:10]
    assert 'openenv_gym_env_steps_total{spec="CartPole-v1",worker="0"} 7.0' in metrics
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [line for line in run.stdout.splitlines() if short in line]
    assert any(" up " in row for row in rows), run.stdout
    assert any("CartPole-v1" in row and " 7 " in row for row in rows), run.stdout
