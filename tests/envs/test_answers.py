"""AnswerEnv: scoring, seeded task draws, and the same episodes through a server."""

from __future__ import annotations

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

from openenv_gym import RemoteEnv
from openenv_gym.envs.answers import AnswerEnv, repeat_tasks, score

ENV_ID = "openenv_gym.envs.answers:AnswerEnv"


def test_answers_score_exact_and_chars() -> None:
    assert score(" abc\n", "abc", "exact") == 1.0
    assert score("abd", "abc", "exact") == 0.0
    assert score("abd", "abcd", "chars") == 0.5
    assert score("abcdxx", "abcd", "chars") == pytest.approx(4 / 6)
    assert score("", "", "chars") == 1.0
    with pytest.raises(ValueError, match="scoring"):
        score("a", "a", "fuzzy")  # type: ignore[arg-type]


def test_answers_env_one_step_episodes() -> None:
    env = AnswerEnv(repeat_tasks("xy", 3), scoring="exact")
    check_env(env, skip_render_check=True)
    prompt, info = env.reset(options={"task": "repeat-y"})
    assert (prompt, info) == ("y=", {"task_id": "repeat-y"})
    assert env.step("yyy") == ("", 1.0, True, False, {"task_id": "repeat-y", "exact": True})
    with pytest.raises(RuntimeError, match="reset"):
        env.step("yyy")
    with pytest.raises(KeyError, match="repeat-z"):
        env.reset(options={"task": "repeat-z"})
    with pytest.raises(ValueError, match="answer"):
        AnswerEnv([{"id": "a", "prompt": "p"}])


def test_answers_remote_equals_in_process() -> None:
    local = AnswerEnv()
    remote = RemoteEnv(ENV_ID)
    try:
        for seed in range(6):
            assert remote.reset(seed=seed) == local.reset(seed=seed)
            completion = "aab"[: seed % 4]
            assert remote.step(completion) == local.step(completion)
        assert isinstance(remote.observation_space, gymnasium.spaces.Text)
    finally:
        remote.close()


def test_answers_server_refuses_a_client_task_file_by_default() -> None:
    # ``tasks`` may be a path: only the operator may set it (not a bool/int/float parameter).
    from openenv_gym.errors import KwargNotAllowedError
    from openenv_gym.providers.local import LocalProvider

    with LocalProvider([ENV_ID]) as servers:
        for kwargs in ({"tasks": "/etc/passwd"}, {"scoring": "exact"}):
            with pytest.raises(KwargNotAllowedError, match=next(iter(kwargs))):
                RemoteEnv(ENV_ID, url=servers.urls[0], **kwargs)
        env = RemoteEnv(ENV_ID, url=servers.urls[0])
        try:
            assert env.reset(seed=0)[0].endswith("=")
        finally:
            env.close()
