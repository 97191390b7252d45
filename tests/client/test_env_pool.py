"""RemoteEnvPool against per-env in-process twins, slow envs, deadlines and typed errors.

Servers run on loopback (``LocalProvider``); every wait is bounded by a deadline.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium.envs.registration import EnvSpec
from gymnasium.vector import SyncVectorEnv, VectorEnv
from gymnasium.vector.utils import concatenate, create_empty_array

from openenv_gym import RemoteEnvPool
from openenv_gym.errors import (
    CallTimeoutError,
    ConnectionLostError,
    EnvIdError,
    InvalidActionError,
    RemoteError,
    StepTimeoutError,
)
from openenv_gym.providers.local import LocalProvider

DICT_TUPLE = "openenv_gym.testing.envs:DictTupleEnv"
HEAVY = "openenv_gym.testing.slow_envs:HeavyTailEnv"
HANG = "openenv_gym.testing.slow_envs:HangEnv"


def _local(env_id: str, **kwargs: Any) -> gymnasium.Env[Any, Any]:
    return gymnasium.make(EnvSpec(id=env_id, entry_point=env_id), **kwargs)


@pytest.fixture(scope="module")
def threaded_servers() -> Iterator[LocalProvider]:
    """Two servers stepping pool sessions on 4 threads each."""
    args = ["--concurrent-steps", "4", "--env-kwargs-allow", "min_delay", "max_delay", "hang"]
    with LocalProvider([DICT_TUPLE, HEAVY, HANG], num_servers=2, extra_args=args) as provider:
        yield provider


@pytest.fixture(scope="module")
def process_server() -> Iterator[LocalProvider]:
    """One server running each pool env in a child process, killed at its deadline."""
    args = ["--concurrent-steps", "4", "--step-isolation", "process", "--env-kwargs-allow", "hang"]
    with LocalProvider([HANG, HEAVY], extra_args=args) as provider:
        yield provider


@pytest.fixture
def pools() -> Iterator[Callable[..., RemoteEnvPool]]:
    built: list[RemoteEnvPool] = []

    def make(*args: Any, **kwargs: Any) -> RemoteEnvPool:
        pool = RemoteEnvPool(*args, **kwargs)
        built.append(pool)
        return pool

    yield make
    for pool in built:
        pool.close()


class _Twins:
    """Per-env in-process envs under envpool's rule: seed ``s + i`` first, NEXT_STEP autoreset."""

    def __init__(self, env_id: str, num_envs: int, seed: int, **kwargs: Any) -> None:
        self.envs = [_local(env_id, **kwargs) for _ in range(num_envs)]
        self.seed = seed
        self.done = [False] * num_envs
        self.seen = [False] * num_envs

    def reset(self, i: int) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        seed = None if self.seen[i] else self.seed + i
        self.seen[i] = True
        self.done[i] = False
        obs, info = self.envs[i].reset(seed=seed)
        return obs, 0.0, False, False, info

    def step(self, i: int, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self.done[i]:
            return self.reset(i)
        obs, reward, terminated, truncated, info = self.envs[i].step(action)
        self.done[i] = bool(terminated or truncated)
        return obs, float(reward), bool(terminated), bool(truncated), info

    def close(self) -> None:
        for env in self.envs:
            env.close()


def _check_batch(
    pool: RemoteEnvPool,
    batch: tuple[Any, ...],
    expected: dict[int, tuple[Any, ...]],
    assert_same: Callable[..., None],
) -> list[int]:
    """Diff a received batch against the twins' results, env by env; return its env ids."""
    obs, rewards, terminated, truncated, info = batch
    ids = [int(i) for i in info["env_id"]]
    assert info["env_id"].dtype == np.int32 and len(ids) == pool.batch_size
    assert rewards.dtype == np.float64 and terminated.dtype == bool and truncated.dtype == bool
    wants = [expected.pop(env_id) for env_id in ids]
    # The batch as gymnasium lays it out (SyncVectorEnv's concatenate) from the twins' values.
    space = pool.single_observation_space
    batched = concatenate(space, [w[0] for w in wants], create_empty_array(space, len(ids)))
    assert_same(obs, batched, f"obs of envs {ids}")
    holder = type("Infos", (), {"num_envs": len(ids), "_add_info": VectorEnv._add_info})()
    want_info: dict[str, Any] = {}
    for j, want in enumerate(wants):
        want_info = holder._add_info(want_info, want[4], j)
    assert_same({k: v for k, v in info.items() if k != "env_id"}, want_info, "info")
    assert_same(rewards, np.array([w[1] for w in wants]), "rewards")
    assert_same(terminated, np.array([w[2] for w in wants]), "terminated")
    assert_same(truncated, np.array([w[3] for w in wants]), "truncated")
    return ids


@pytest.mark.parametrize(
    ("env_id", "kwargs", "num_envs", "batch_size"),
    [
        (DICT_TUPLE, {}, 7, 3),
        (HEAVY, {"min_delay": 0.0005, "max_delay": 0.005}, 9, 4),
    ],
)
def test_env_pool_equals_per_env_in_process_under_random_interleavings(
    threaded_servers: LocalProvider,
    pools: Callable[..., RemoteEnvPool],
    assert_same: Callable[..., None],
    env_id: str,
    kwargs: dict[str, Any],
    num_envs: int,
    batch_size: int,
) -> None:
    rng = np.random.default_rng(7)
    urls = threaded_servers.urls
    pool = pools(env_id, num_envs, batch_size=batch_size, seed=11, urls=urls, **kwargs)
    twins = _Twins(env_id, num_envs, 11, **kwargs)
    try:
        expected = {i: twins.reset(i) for i in range(num_envs)}
        pool.async_reset()
        idle: set[int] = set()
        steps = 0
        while steps < 150:
            idle |= set(_check_batch(pool, pool.recv(timeout=30), expected, assert_same))
            need = max(0, batch_size - (num_envs - len(idle)))
            count = int(rng.integers(need, len(idle) + 1))
            chosen = [int(i) for i in rng.permutation(sorted(idle))[:count]]
            if not chosen:
                continue
            actions = np.array([pool.single_action_space.sample() for _ in chosen])
            for i, action in zip(chosen, actions, strict=True):
                expected[i] = twins.step(i, action)
            pool.send(actions, np.array(chosen))
            idle -= set(chosen)
            steps += len(chosen)
    finally:
        twins.close()


def test_env_pool_synchronous_batch_equals_sync_vector_env(
    threaded_servers: LocalProvider,
    pools: Callable[..., RemoteEnvPool],
    assert_same: Callable[..., None],
) -> None:
    pool = pools(DICT_TUPLE, 5, seed=3, urls=threaded_servers.urls)
    local = SyncVectorEnv([lambda: _local(DICT_TUPLE)] * 5)
    try:
        obs, info = pool.reset()
        want_obs, _ = local.reset(seed=3)
        assert_same(obs, want_obs, "reset obs")
        assert info["env_id"].tolist() == [0, 1, 2, 3, 4]
        rng = np.random.default_rng(0)
        for _ in range(40):
            actions = rng.integers(-1, 2, 5)
            obs, rewards, terminated, truncated, info = pool.step(actions)
            w_obs, w_rewards, w_terminated, w_truncated, _ = local.step(actions)
            assert info["env_id"].tolist() == [0, 1, 2, 3, 4]
            assert_same(obs, w_obs, "obs")
            assert_same(rewards, w_rewards, "rewards")
            assert_same(terminated, w_terminated, "terminated")
            assert_same(truncated, w_truncated, "truncated")
        obs, _ = pool.reset(seed=9)  # an explicit seed: env i gets 9 + i, as SyncVectorEnv
        assert_same(obs, local.reset(seed=9)[0], "reseeded obs")
    finally:
        local.close()
    assert pool.single_observation_space == local.single_observation_space
    assert pool.action_space == local.action_space


def test_env_pool_slow_env_holds_up_nobody(
    threaded_servers: LocalProvider, pools: Callable[..., RemoteEnvPool]
) -> None:
    pool = pools(HANG, 4, batch_size=1, urls=threaded_servers.urls[:1], hang=1.5)
    pool.reset()
    start = time.monotonic()
    pool.send(np.array([1, 0, 0, 0]), np.arange(4))  # env 0 runs `sleep 1.5`
    finished = {}
    while len(finished) < 4:
        _, _, _, _, info = pool.recv(timeout=10)
        finished[int(info["env_id"][0])] = time.monotonic() - start
        if len(finished) == 3:  # env 0 still runs: a short wait ends empty-handed, losing nothing
            with pytest.raises(CallTimeoutError, match="recv"):
                pool.recv(timeout=0.1)
    fast = max(finished[i] for i in (1, 2, 3))
    assert fast < 1.0, finished  # the others did not wait for env 0
    assert finished[0] >= 1.5, finished
    assert list(finished)[-1] == 0


def _sleepers(mark: str) -> list[int]:
    """Pids of ``sleep <mark>`` processes (the hang of HangEnv)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[:2] == [b"sleep", mark.encode()]:
                pids.append(int(entry.name))
    return pids


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)  # polling /proc, not synchronising with a peer
    return condition()


def test_env_pool_step_past_deadline_is_a_typed_timeout_and_leaves_no_process(
    process_server: LocalProvider, pools: Callable[..., RemoteEnvPool]
) -> None:
    mark = "41.75"
    pool = pools(HANG, 3, batch_size=1, urls=process_server.urls, hang=float(mark))
    assert pool.step_isolation == "process"
    pool.reset()
    start = time.monotonic()
    pool.send(np.array([1]), [2], timeout=1.0)
    assert _wait_for(lambda: bool(_sleepers(mark)), 5.0)
    with pytest.raises(StepTimeoutError) as caught:
        pool.recv(timeout=10)
    elapsed = time.monotonic() - start
    assert 1.0 <= elapsed < 2.0, elapsed
    error = caught.value
    assert isinstance(error, TimeoutError)
    assert (error.env_index, error.timeout) == (2, 1.0)
    assert 1.0 <= error.elapsed < 2.0
    assert "env 2" in str(error) and "deadline of 1 s" in str(error)
    assert _wait_for(lambda: not _sleepers(mark), 3.0), "the hung command survived"
    with pytest.raises(EnvIdError, match="env 2 needs a reset"):
        pool.send(np.array([0]), [2])
    obs, _ = pool.reset([2])  # a fresh env in a fresh child
    assert obs.tolist() == [[0]]
    pool.send(np.array([0, 0, 0]), [0, 1, 2])
    received = [pool.recv(timeout=10) for _ in range(3)]
    assert sorted(int(r[4]["env_id"][0]) for r in received) == [0, 1, 2]
    assert all(r[0].tolist() == [[1]] for r in received)


def test_env_pool_close_kills_every_env_process(
    process_server: LocalProvider, pools: Callable[..., RemoteEnvPool]
) -> None:
    server = process_server.pids[0]

    def children() -> set[int]:
        found = set()
        for task in Path(f"/proc/{server}/task").iterdir():
            try:
                text = (task / "children").read_text().split()
            except FileNotFoundError:  # a server thread that ended since the listing
                continue
            found |= {int(pid) for pid in text}
        return found

    before = children()
    pool = pools(HANG, 3, urls=process_server.urls, hang=33.5)
    assert len(children() - before) == 3
    pool.reset()
    pool.send(np.array([1, 0, 0]), [0, 1, 2])
    assert _wait_for(lambda: bool(_sleepers("33.5")), 5.0)
    pool.close()
    assert _wait_for(lambda: children() <= before, 5.0), children() - before
    assert _wait_for(lambda: not _sleepers("33.5"), 5.0)


def test_env_pool_owned_servers_kill_a_step_past_its_deadline(
    pools: Callable[..., RemoteEnvPool],
) -> None:
    mark = "47.25"
    pool = pools(HANG, 2, batch_size=1, hang=float(mark), step_timeout=0.5)  # starts a server
    assert (pool.step_isolation, pool.step_timeout) == ("process", 0.5)
    pool.reset()
    start = time.monotonic()
    pool.send(np.array([1]), [0])  # the server's default deadline applies
    with pytest.raises(StepTimeoutError, match="env 0"):
        pool.recv(timeout=10)
    assert 0.5 <= time.monotonic() - start < 1.5
    assert _wait_for(lambda: not _sleepers(mark), 3.0), "the hung command survived"
    pool.send(np.array([1]), [1])
    assert _wait_for(lambda: bool(_sleepers(mark)), 5.0)
    pool.close()  # a step in flight at close: its process group is killed too
    assert _wait_for(lambda: not _sleepers(mark), 5.0)


def test_env_pool_thread_deadline_gives_up_the_step_and_carries_on(
    threaded_servers: LocalProvider, pools: Callable[..., RemoteEnvPool]
) -> None:
    pool = pools(HANG, 2, batch_size=1, urls=threaded_servers.urls[:1], hang=2.0)
    pool.reset()
    start = time.monotonic()
    pool.send(np.array([1]), [0], timeout=0.5)
    with pytest.raises(StepTimeoutError, match="env 0"):
        pool.recv(timeout=10)
    assert time.monotonic() - start < 1.5
    pool.send(np.array([0]), [1])  # another env steps meanwhile, on a replacement thread
    _, _, _, _, info = pool.recv(timeout=1.0)
    assert info["env_id"].tolist() == [1]
    obs, _ = pool.reset([0])
    assert obs.tolist() == [[0]]


def test_env_pool_typed_errors(
    threaded_servers: LocalProvider, pools: Callable[..., RemoteEnvPool]
) -> None:
    pool = pools(DICT_TUPLE, 4, batch_size=2, urls=threaded_servers.urls)
    with pytest.raises(EnvIdError, match="needs a reset"):
        pool.send(np.zeros(4, dtype=np.int64))
    pool.async_reset()
    with pytest.raises(EnvIdError, match="already has a step in flight"):
        pool.send(np.zeros(1, dtype=np.int64), [3])
    pool.recv(timeout=10)
    pool.recv(timeout=10)
    with pytest.raises(InvalidActionError, match=r"shape \(2,\)"):
        pool.send(np.zeros(3, dtype=np.int64), [0, 1])
    with pytest.raises(EnvIdError, match="out of range"):
        pool.send(np.zeros(1, dtype=np.int64), [4])
    with pytest.raises(EnvIdError, match="repeats"):
        pool.send(np.zeros(2, dtype=np.int64), [1, 1])
    with pytest.raises(EnvIdError, match="fewer than batch_size"):
        pool.recv(timeout=1)
    with pytest.raises(ValueError, match="timeout"):
        pool.send(np.zeros(1, dtype=np.int64), [0], timeout=-1.0)
    pool.send(np.array([5]), [0])  # outside Discrete(3, start=-1): the env raises remotely
    pool.send(np.array([0]), [1])
    with pytest.raises(RemoteError, match="env 0") as caught:
        pool.recv(timeout=10)
    assert isinstance(caught.value, AssertionError)  # the env's own assertion, typed


def test_env_pool_server_gone_is_connection_lost(pools: Callable[..., RemoteEnvPool]) -> None:
    with LocalProvider([HANG], extra_args=["--env-kwargs-allow", "hang"]) as provider:
        pool = pools(HANG, 2, batch_size=1, urls=provider.urls, hang=30.0)
        pool.reset()
        pool.send(np.array([1]), [0])
        os.kill(provider.pids[0], signal.SIGKILL)
        with pytest.raises(ConnectionLostError):
            pool.recv(timeout=10)


def test_remote_env_step_deadline_is_a_typed_timeout_and_reset_opens_a_new_session(
    threaded_servers: LocalProvider,
) -> None:
    from openenv_gym import RemoteEnv

    url = threaded_servers.urls[1]
    with RemoteEnv(HANG, url=url, hang=1.0) as env:
        env.reset(seed=0)
        start = time.monotonic()
        with pytest.raises(StepTimeoutError) as caught:
            env.step(1, timeout=0.3)
        assert time.monotonic() - start < 1.0
        assert (caught.value.env_index, caught.value.timeout) == (0, 0.3)
        assert caught.value.url == url and isinstance(caught.value, TimeoutError)
        obs, _ = env.reset(seed=0)  # a new session on the same server
        assert obs.tolist() == [0]
        assert env.step(0, timeout=5.0)[0].tolist() == [1]


def test_remote_vector_env_step_deadline_names_the_shard_and_reconnects(
    threaded_servers: LocalProvider,
) -> None:
    from openenv_gym import RemoteVectorEnv

    urls = threaded_servers.urls
    with RemoteVectorEnv(HANG, 4, urls=urls, reconnect=True, hang=1.0) as envs:
        envs.reset(seed=0)
        start = time.monotonic()
        with pytest.raises(StepTimeoutError) as caught:
            envs.step(np.array([0, 0, 1, 0]), timeout=0.3)  # env 2: the second shard's first
        assert time.monotonic() - start < 1.0
        assert caught.value.env_index == 2 and caught.value.url == urls[1]
        envs.step_async(np.zeros(4, dtype=np.int64))  # the lost shard is re-opened
        _, _, _, truncated, infos = envs.step_wait(timeout=10)
        assert truncated.tolist() == [False, False, True, True]
        assert infos["reconnected"].tolist() == [False, False, True, True]
