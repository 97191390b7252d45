"""Reward parity with Harbor's own runner: ``harbor run -a oracle`` on our sandboxes.

Harbor 0.25 (Python 3.13, in the trixie runner image) runs its own trial, oracle agent and
verifier through :class:`OpenEnvGymEnvironment` against a server on loopback; its rewards must
equal what :class:`HarborEnv` gives the oracle on the same tasks (the do-nothing side is in
``openenv-gym bench --harbor``, which runs ``-a nop`` too).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from openenv_gym.interop.harbor.container import live_task_containers
from openenv_gym.interop.harbor.env import HarborEnv
from openenv_gym.providers.local import LocalProvider
from openenv_gym.testing.harbor_tasks import TASKS_DIR
from openenv_gym.testing.optional import unavailable

ENV_ID = "harbor:harbor_tasks"


@pytest.fixture(scope="module")
def runner_image(docker_image: str) -> str:
    """Harbor's runner image (built once per machine; `.ci/run` builds it first)."""
    from openenv_gym.bench.harbor_runner import build_runner_image

    try:
        return build_runner_image(progress=lambda line: None)
    except Exception as exc:  # no debootstrap, no PyPI: say how to get it
        unavailable(
            "harbor",
            f"cannot build Harbor's runner image ({exc}); needs debootstrap and PyPI once: "
            "python -c 'from openenv_gym.bench.harbor_runner import build_runner_image as b; b()'",
        )
        raise


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, docker_image: str) -> Iterator[str]:
    hosting = tmp_path_factory.mktemp("parity") / "hosting.toml"
    hosting.write_text(f'[[env]]\nspec = "harbor:{TASKS_DIR}"\nkwargs = {{ sandbox_api = true }}\n')
    with LocalProvider([], extra_args=["--hosting", str(hosting)]) as provider:
        yield provider.urls[0]


def _oracle_rewards() -> dict[str, dict[str, float]]:
    rewards = {}
    with HarborEnv(TASKS_DIR, oracle=True) as env:
        for task in sorted(env.tasks):
            env.reset(options={"task": task})
            env.step("oracle")
            rewards[task] = env.step("submit")[4]["rewards"]
    return rewards


def test_harbor_runner_oracle_rewards_equal_harbor_env_rewards(
    runner_image: str, server: str
) -> None:
    from openenv_gym.bench.harbor_runner import run_harbor

    before = {c.id for c in live_task_containers(all_owners=True)}
    theirs: dict[str, Any] = run_harbor(
        TASKS_DIR, url=server, env_id=ENV_ID, agent="oracle", image=runner_image
    )
    ours = _oracle_rewards()
    assert theirs == ours, f"harbor run -a oracle: {theirs} != ours {ours}"
    assert sorted(ours) == ["hello-file", "word-count"]
    assert all(rewards["reward"] == 1.0 for rewards in ours.values())
    assert {c.id for c in live_task_containers(all_owners=True)} <= before  # Harbor's stop ran
