"""The embedded server pool: single envs of one process share servers, with exact results."""

from __future__ import annotations

import os
from collections.abc import Iterator

import gymnasium
import numpy as np
import pytest

import openenv_gym  # noqa: F401 - registers openenv/<id>
from openenv_gym.client import pool
from openenv_gym.client.pool import PoolOptions, ServerPool


@pytest.fixture
def small_pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerPool]:
    """This process's embedded pool, two sessions per server, at most two servers."""
    fresh = ServerPool(PoolOptions(envs_per_server=2, max_servers=2))
    monkeypatch.setattr(pool, "_pool", fresh)
    yield fresh
    assert fresh.server_count == 0, "a pooled server outlived its envs"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_pool_single_envs_share_servers_and_match_in_process(small_pool: ServerPool) -> None:
    remotes = [gymnasium.make("openenv/CartPole-v1") for _ in range(5)]
    locals_ = [gymnasium.make("CartPole-v1") for _ in range(5)]
    try:
        urls = [env.unwrapped.url for env in remotes]  # type: ignore[attr-defined]
        assert len(set(urls)) == 2 and small_pool.server_count == 2  # 2 + 2, then shared
        for index, (remote, local) in enumerate(zip(remotes, locals_, strict=True)):
            np.testing.assert_array_equal(remote.reset(seed=index)[0], local.reset(seed=index)[0])
        rng = np.random.default_rng(0)
        for _ in range(200):  # interleaved across sessions of the same servers
            for remote, local in zip(remotes, locals_, strict=True):
                action = int(rng.integers(2))
                got, want = remote.step(action), local.step(action)
                np.testing.assert_array_equal(got[0], want[0])
                assert got[1:4] == want[1:4]
                if got[2] or got[3]:
                    remote.reset()
                    local.reset()
    finally:
        for env in remotes + locals_:
            env.close()


def test_pool_server_stops_with_its_last_env(small_pool: ServerPool) -> None:
    first = gymnasium.make("openenv/CartPole-v1")
    second = gymnasium.make("openenv/CartPole-v1")
    lease = first.unwrapped._provider  # type: ignore[attr-defined]
    (pid,) = lease._server.provider.pids
    first.close()
    assert small_pool.server_count == 1 and _alive(pid)  # the second env still uses it
    second.close()
    assert small_pool.server_count == 0
    assert not _alive(pid)


def test_pool_options_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENENV_GYM_ENVS_PER_SERVER", "4")
    monkeypatch.setenv("OPENENV_GYM_MAX_EMBEDDED_SERVERS", "3")
    assert PoolOptions.from_environment() == PoolOptions(envs_per_server=4, max_servers=3)
    monkeypatch.setenv("OPENENV_GYM_ENVS_PER_SERVER", "0")
    with pytest.raises(ValueError, match=r"OPENENV_GYM_ENVS_PER_SERVER must be an integer >= 1"):
        PoolOptions.from_environment()
