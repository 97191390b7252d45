"""Hosts: a session's envs driven in-process, single or batched, no sockets."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from openenv_gym.server.host import BatchHost, SingleHost, make_host


def cartpole() -> gymnasium.Env[Any, Any]:
    return gymnasium.make("CartPole-v1")


def test_host_make_host_picks_single_without_a_mode_and_batch_with_one() -> None:
    single = make_host(cartpole)
    batch = make_host(cartpole, num_envs=3, autoreset_mode=AutoresetMode.SAME_STEP)
    assert isinstance(single, SingleHost) and single.num_envs == 1
    assert isinstance(batch, BatchHost) and batch.num_envs == 3
    single.close()
    batch.close()


@pytest.mark.parametrize(("num_envs", "mode"), [(2, None), (0, AutoresetMode.NEXT_STEP), (0, None)])
def test_host_make_host_refuses_a_bad_num_envs(num_envs: int, mode: AutoresetMode | None) -> None:
    with pytest.raises(ValueError, match=f"num_envs must be 1 .*: {num_envs}"):
        make_host(cartpole, num_envs=num_envs, autoreset_mode=mode)


def test_host_single_replies_are_the_envs_own() -> None:
    host = make_host(cartpole)
    expected = cartpole()
    obs, info = host.reset(0, None)
    want_obs, want_info = expected.reset(seed=0)
    assert np.array_equal(obs, want_obs) and info == want_info
    assert host.step(np.int64(1))[1:4] == list(expected.step(np.int64(1))[1:4])
    assert host.get_attr("gravity") == 9.8 and host.call("gravity", [], {}) == 9.8
    state = host.state()
    assert isinstance(state, dict) and state["step_count"] == 1 and state["episode_id"]
    host.close()
    host.close()  # idempotent
    expected.close()


def test_host_batch_call_and_attrs_are_syncvectorenvs() -> None:
    host = make_host(cartpole, num_envs=2, autoreset_mode=AutoresetMode.NEXT_STEP)
    expected = SyncVectorEnv([cartpole] * 2)
    assert host.get_attr("gravity") == expected.get_attr("gravity") == (9.8, 9.8)
    host.set_attr("tag", [1, 2], per_env=False)  # a shared list is not split per env
    assert host.get_attr("tag") == ([1, 2], [1, 2])
    host.set_attr("tag", [3, 4], per_env=True)
    assert host.call("tag", [], {}) == (3, 4)
    with pytest.raises(ValueError, match="1 values for 2 env"):
        host.set_attr("tag", [5], per_env=True)
    states = host.state()
    assert isinstance(states, list) and len(states) == 2
    host.close()
    host.close()  # idempotent
    expected.close()


def test_host_batch_episode_ids_change_only_for_the_envs_that_reset() -> None:
    host = make_host(cartpole, num_envs=2, autoreset_mode=AutoresetMode.NEXT_STEP)
    host.reset([0, 1], None)
    first = [state["episode_id"] for state in host.state()]
    host.reset([2, None], {"reset_mask": np.array([True, False])})
    second = [state["episode_id"] for state in host.state()]
    assert second[0] != first[0] and second[1] == first[1]
    host.close()


def test_host_batch_failing_part_way_closes_the_envs_already_built() -> None:
    closed: list[int] = []

    def factory() -> gymnasium.Env[Any, Any]:
        index = len(closed_hooks)
        if index == 2:
            raise RuntimeError("third env fails")
        env = cartpole()
        env.unwrapped.close = lambda: closed.append(index)  # type: ignore[method-assign]
        closed_hooks.append(index)
        return env

    closed_hooks: list[int] = []
    with pytest.raises(RuntimeError, match="third env fails"):
        BatchHost(factory, num_envs=3, autoreset_mode=AutoresetMode.SAME_STEP)
    assert sorted(closed) == [0, 1]
