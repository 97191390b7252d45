"""``openenv-gym ray up | ps | down`` against a real local Ray cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import gymnasium
import numpy as np
import pytest

from openenv_gym.testing.optional import require_module

ray = require_module("ray", family="ray", install="pip install 'openenv-gym[ray]'")

from ray.cluster_utils import Cluster
from ray.util.state import list_actors, list_placement_groups

from openenv_gym import RemoteVectorEnv
from openenv_gym.errors import ConnectError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """One node with room for two half-CPU servers, and the state API."""
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": True}
    )
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if name != "OPENENV_GYM_TOKEN"}
    return subprocess.run(
        [sys.executable, "-m", "openenv_gym", "ray", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )


def _wait_for(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def _alive(name: str) -> list[Any]:
    return [
        actor
        for actor in list_actors(filters=[("state", "=", "ALIVE")])
        if actor.name.startswith(f"{name}-")
    ]


def test_cli_ray_up_serves_after_it_exits_ps_lists_and_down_removes(cluster: Cluster) -> None:
    address = cluster.address
    up = _cli("up", "-n", "2", "CartPole-v1", "--address", address, "--num-cpus", "0.5",
              "--name", "cli-test")  # fmt: skip
    assert up.returncode == 0, up.stderr[-3000:]
    lines = up.stdout.split()
    urls = [word for word in lines if word.startswith("ws://")]
    token = next(word for word in lines if word.startswith("OPENENV_GYM_TOKEN="))
    token = token.split("=", 1)[1]
    assert len(urls) == 2 and len(set(urls)) == 2 and token
    try:
        # The command has exited; its detached servers still serve, exactly.
        remote = RemoteVectorEnv("CartPole-v1", 4, urls=urls, token=token)
        local = gymnasium.make_vec("CartPole-v1", 4, vectorization_mode="sync")
        np.testing.assert_array_equal(remote.reset(seed=2)[0], local.reset(seed=2)[0])
        for action in ([0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 1, 1]) * 5:
            got, want = remote.step(np.array(action)), local.step(np.array(action))
            for a, b in zip(got[:4], want[:4], strict=True):
                np.testing.assert_array_equal(a, b)
        remote.close()
        local.close()
        pids = [actor.pid for actor in _alive("cli-test")]
        assert len(pids) == 2

        ps = _cli("ps", "--address", address)
        assert ps.returncode == 0, ps.stderr[-3000:]
        rows = [line for line in ps.stdout.splitlines() if line.startswith("cli-test-")]
        assert len(rows) == 2 and all("alive" in row and "CartPole-v1" in row for row in rows)
        assert {url for row in rows for url in row.split() if url.startswith("ws://")} == set(urls)
    finally:
        down = _cli("down", "--address", address, "--name", "cli-test")
    assert down.returncode == 0, down.stderr[-3000:]
    assert "removed 2 server(s) cli-test-0 cli-test-1" in down.stdout
    _wait_for(lambda: not _alive("cli-test"), "the servers' actors to die")
    groups = [g for g in list_placement_groups() if g.name == "cli-test"]
    assert groups and all(group.state == "REMOVED" for group in groups)
    with pytest.raises(ConnectError):  # nothing listens there any more
        RemoteVectorEnv("CartPole-v1", 2, urls=urls[:1], token=token, connect_timeout=5.0)
    assert "removed 0 server(s)" in _cli("down", "--address", address).stdout
