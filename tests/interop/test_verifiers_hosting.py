"""verifiers both ways: its tasksets hosted as gymnasium envs, its OpenEnvTaskset on our envs."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import SyncVectorEnv

from openenv_gym.testing.optional import require_module

require_module("openenv", family="openenv", install="pip install 'openenv-gym[openenv]'")
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
WORD_GAME = "openenv_gym.testing.openenv_echo:WordGuessEnv"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A server started with the CLI: ``openenv-gym serve verifiers:<module>``."""
    with LocalProvider([SPEC, "CartPole-v1", WORD_GAME]) as provider:
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


# -- verifiers' OpenEnvTaskset and OpenEnvEnv (their code, unmodified) against envs we host ---
#
# OpenEnvEnv.run(task, agents) plays the model's turns through ``agents.player``; the model
# here is a scripted player built with verifiers' own ``Agents`` (no LLM can run in CI): each
# turn it reads the JSON payload verifiers sends (observation + action schema) and replies.


@dataclasses.dataclass
class _Segment:
    last_reply: str
    terminated: bool = False


class _ScriptedInteraction:
    def __init__(self, trace: Any, replies: Iterator[str], seen: list[dict[str, Any]]) -> None:
        self.trace, self._replies, self._seen = trace, replies, seen

    async def turn(self, payload: str) -> _Segment:
        self._seen.append(json.loads(payload))
        reply = next(self._replies, None)
        return _Segment("" if reply is None else reply, terminated=reply is None)


class _ScriptedPlayer:
    def __init__(self, replies: list[str]) -> None:
        self.replies = replies
        self.seen: list[dict[str, Any]] = []
        self.traces: list[Any] = []

    @contextlib.asynccontextmanager
    async def interaction(self, task: Any) -> AsyncIterator[_ScriptedInteraction]:
        import verifiers.v1 as vf
        from verifiers.v1.trace import AgentInfo, TraceTask

        trace = vf.Trace(
            task=TraceTask(type=type(task).__name__, data=task.data),
            agent=AgentInfo(config=vf.AgentConfig()),
        )
        self.traces.append(trace)
        yield _ScriptedInteraction(trace, iter(self.replies), self.seen)


def _openenv_taskset_episode(
    base_url: str, resets: list[dict[str, Any]], replies: list[str]
) -> tuple[list[Any], _ScriptedPlayer]:
    """Run verifiers' OpenEnvEnv on each task of an OpenEnvTaskset(base_url=...)."""
    import verifiers.v1 as vf
    from verifiers.v1.tasksets.openenv import OpenEnvConfig, OpenEnvEnv, OpenEnvEnvConfig

    config = OpenEnvEnvConfig(taskset=OpenEnvConfig(id="openenv", base_url=base_url, resets=resets))
    env = OpenEnvEnv(config)
    tasks = list(env.taskset)
    player = _ScriptedPlayer(replies)
    agents = vf.Agents(config, lambda name, spec: player)
    for task in tasks:
        asyncio.run(env.run(task, agents))
    return tasks, player


def test_verifiers_openenv_taskset_drives_an_openenv_env_we_host(server: str) -> None:
    base = server.replace("ws://", "http://") + "/envs/" + urllib.parse.quote(WORD_GAME, safe="")
    # Seed 1's word is found by the fourth guess; verifiers sums OpenEnv's per-step rewards.
    tasks, player = _openenv_taskset_episode(base, [{"seed": 1}], ["cab", "bad", "dab", "add"])
    assert len(tasks) == 1 and tasks[0].data.base_url == base
    opening = player.seen[0]
    assert opening["observation"]["guesses_left"] == 6
    assert opening["action_schema"]["required"] == ["guess"]
    from openenv_gym.interop.openenv.hosted import OpenEnvAsGym
    from openenv_gym.testing.openenv_echo import WordGuessEnv

    local = OpenEnvAsGym(WordGuessEnv)
    local.reset(seed=1)
    total, done = 0.0, False
    for guess in ("cab", "bad", "dab", "add"):
        if done:
            break
        _, reward, done, _, _ = local.step({"guess": guess})
        total += reward
    assert done
    rewards = player.traces[0].rewards
    assert rewards["openenv_reward"].score == pytest.approx(total)


def test_verifiers_openenv_taskset_drives_a_gymnasium_env_we_host(server: str) -> None:
    import gymnasium

    base = server.replace("ws://", "http://") + "/envs/CartPole-v1"
    replies = ["1", "0"] * 8
    _, player = _openenv_taskset_episode(base, [{"seed": 4}], replies)
    local = gymnasium.make("CartPole-v1")
    obs, _ = local.reset(seed=4)
    assert player.seen[0]["observation"]["observation"] == pytest.approx(obs.tolist())
    total = 0.0
    for reply in replies:
        obs, reward, terminated, truncated, _ = local.step(int(reply))
        total += float(reward)
        if terminated or truncated:
            break
    assert player.traces[0].rewards["openenv_reward"].score == total
