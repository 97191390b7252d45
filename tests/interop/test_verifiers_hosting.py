"""verifiers tasksets hosted as gymnasium envs: in-process checks and batched over our server."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import SyncVectorEnv

from openenv_gym.testing.optional import require_module

require_module(
    "verifiers",
    family="verifiers",
    install="pip install 'openenv-gym[verifiers]' && pip install --no-deps verifiers==0.4.0",
)

import openenv_gym
from openenv_gym.errors import UnknownEnvError
from openenv_gym.interop.verifiers.hosted import VerifiersTaskEnv
from openenv_gym.providers.local import LocalProvider
from openenv_gym.testing.verifiers_tasks import QUESTIONS

TASKSET = "openenv_gym.testing.verifiers_tasks"
SPEC = f"verifiers:{TASKSET}"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A server started with the CLI: ``openenv-gym serve verifiers:<module>``."""
    with LocalProvider([SPEC]) as provider:
        yield provider.urls[0]


def test_verifiers_task_env_passes_check_env_and_scores_with_the_task_rewards() -> None:
    env = VerifiersTaskEnv(TASKSET)
    check_env(env, skip_render_check=True)
    for index, (question, answer) in enumerate(QUESTIONS):
        prompt, info = env.reset(options={"task_idx": index})
        assert question in prompt and info == {"task_idx": index, "task_name": f"q{index}"}
        _, reward, terminated, truncated, info = env.step(f" {answer}\n")
        assert (reward, terminated, truncated) == (1.0, True, False)
        assert info == {"rewards": {"exact": 1.0}, "metrics": {"reply_chars": len(answer)}}
        env.reset(options={"task_idx": index})
        assert env.step("wrong")[1] == 0.0
    with pytest.raises(RuntimeError, match="call reset first"):
        env.step("5")


def test_verifiers_taskset_hosted_batched_equals_in_process(server: str) -> None:
    remote = openenv_gym.RemoteVectorEnv(SPEC, 6, urls=[server, server])
    local = SyncVectorEnv([lambda: VerifiersTaskEnv(TASKSET)] * 6)
    answers = dict(QUESTIONS)
    try:
        for seed in (0, 11):
            r_obs, r_info = remote.reset(seed=seed)
            l_obs, l_info = local.reset(seed=seed)
            assert r_obs == l_obs
            np.testing.assert_array_equal(r_info["task_idx"], l_info["task_idx"])
            # Right answers for even envs, wrong ones for odd: rewards 1, 0, 1, ...
            completions = tuple(
                answers[QUESTIONS[i][0]] if n % 2 == 0 else "no"
                for n, i in enumerate(l_info["task_idx"])
            )
            r, lo = remote.step(completions), local.step(completions)
            np.testing.assert_array_equal(r[1], [1.0, 0.0] * 3)
            for a, b in zip(r[1:4], lo[1:4], strict=True):
                np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(r[4]["rewards"]["exact"], lo[4]["rewards"]["exact"])
    finally:
        remote.close()
        local.close()


def test_verifiers_spec_is_operator_only(server: str) -> None:
    with pytest.raises(UnknownEnvError):
        openenv_gym.RemoteEnv("verifiers:verifiers.v1.tasksets.openenv", url=server)
