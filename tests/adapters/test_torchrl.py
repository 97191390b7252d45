"""TorchRL 0.14 over our envs: ``GymEnv("openenv/...")``, ``GymWrapper`` of RemoteEnv and of
RemoteVectorEnv (SAME_STEP, DISABLED), checked with TorchRL's ``check_env_specs`` and with
rollouts equal, leaf by leaf, to the same TorchRL env over the in-process gymnasium env."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gymnasium
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from openenv_gym.testing.optional import require_module

torch = require_module("torch", family="torchrl", install="pip install 'openenv-gym[torchrl]'")
require_module("torchrl", family="torchrl", install="pip install 'openenv-gym[torchrl]'")

from torchrl.envs import EnvBase, GymEnv, GymWrapper
from torchrl.envs.utils import check_env_specs

import openenv_gym  # noqa: F401  (registers openenv/<id>)
from openenv_gym import RemoteEnv, RemoteVectorEnv
from openenv_gym.providers.local import LocalProvider

SPECS = ["CartPole-v1", "Pendulum-v1"]
KWARGS: dict[str, dict[str, Any]] = {"CartPole-v1": {}, "Pendulum-v1": {"max_episode_steps": 25}}
"""Pendulum never terminates: a short time limit makes the rollouts cross episode ends."""
STEPS = 60
MODES = [AutoresetMode.SAME_STEP, AutoresetMode.DISABLED]


@pytest.fixture(scope="module")
def servers() -> Iterator[LocalProvider]:
    with LocalProvider(SPECS, num_servers=2) as provider:
        yield provider


@pytest.fixture
def closing() -> Iterator[Callable[[EnvBase], EnvBase]]:
    built: list[EnvBase] = []

    def keep(env: EnvBase) -> EnvBase:
        built.append(env)
        return env

    yield keep
    for env in built:
        env.close()


def _rollout(env: EnvBase, steps: int, seed: int) -> Any:
    """A seeded rollout of random actions (TorchRL draws them from the action spec)."""
    env.set_seed(seed)
    torch.manual_seed(seed)
    return env.rollout(steps, break_when_any_done=False)


def _assert_same_rollout(actual: Any, expected: Any) -> None:
    keys = sorted(expected.keys(include_nested=True, leaves_only=True), key=str)
    assert sorted(actual.keys(include_nested=True, leaves_only=True), key=str) == keys
    assert actual.batch_size == expected.batch_size
    for key in keys:
        a, e = actual.get(key), expected.get(key)
        assert a.dtype == e.dtype, f"{key}: {a.dtype} != {e.dtype}"
        assert torch.equal(a, e), f"{key} differs"
    done = expected.get(("next", "done"))
    assert done.any(), "the rollout must cross episode ends to test autoreset"


@pytest.mark.parametrize("env_id", SPECS)
def test_gym_env_openenv_id_matches_in_process(
    env_id: str, closing: Callable[[EnvBase], EnvBase]
) -> None:
    remote = closing(GymEnv(f"openenv/{env_id}", **KWARGS[env_id]))
    local = closing(GymEnv(env_id, **KWARGS[env_id]))
    check_env_specs(remote)
    assert remote.observation_spec == local.observation_spec
    assert remote.action_spec == local.action_spec
    _assert_same_rollout(_rollout(remote, STEPS, 3), _rollout(local, STEPS, 3))


@pytest.mark.parametrize("env_id", SPECS)
def test_gym_wrapper_remote_env_matches_in_process(
    env_id: str, servers: LocalProvider, closing: Callable[[EnvBase], EnvBase]
) -> None:
    remote = closing(GymWrapper(RemoteEnv(env_id, url=servers.urls[0], **KWARGS[env_id])))
    local = closing(GymWrapper(gymnasium.make(env_id, **KWARGS[env_id])))
    check_env_specs(remote)
    _assert_same_rollout(_rollout(remote, STEPS, 5), _rollout(local, STEPS, 5))


@pytest.mark.parametrize("mode", MODES, ids=lambda mode: mode.value)
@pytest.mark.parametrize("env_id", SPECS)
def test_gym_wrapper_remote_vector_env_matches_sync_vector_env(
    env_id: str,
    mode: AutoresetMode,
    servers: LocalProvider,
    closing: Callable[[EnvBase], EnvBase],
) -> None:
    num_envs = 5
    kwargs = KWARGS[env_id]
    remote_vector = RemoteVectorEnv(
        env_id, num_envs, urls=servers.urls, autoreset_mode=mode, **kwargs
    )
    assert len(remote_vector.urls) == 2  # two shards: one message per server per step
    remote = closing(GymWrapper(remote_vector))
    local = closing(
        GymWrapper(
            SyncVectorEnv(
                [lambda: gymnasium.make(env_id, **kwargs)] * num_envs, autoreset_mode=mode
            )
        )
    )
    assert remote.batch_size == local.batch_size == torch.Size([num_envs])
    check_env_specs(remote)
    check_env_specs(local)  # the same checks' RNG use on both sides before the rollouts
    _assert_same_rollout(_rollout(remote, STEPS, 7), _rollout(local, STEPS, 7))
