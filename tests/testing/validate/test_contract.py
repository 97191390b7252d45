"""Each contract check fails on the broken env made for it and passes on good envs."""

from __future__ import annotations

import pytest

from openenv_gym.testing.validate import validate

BROKEN = "openenv_gym.testing.broken_envs:"


@pytest.mark.parametrize(
    ("env", "check", "words"),
    [
        ("NondeterministicEnv", "contract.seed_determinism", "seed 1234 twice"),
        ("ObsOutOfSpaceEnv", "contract.obs_in_space", "step 3: expected an observation in Box"),
        ("WrongDtypeEnv", "contract.obs_dtype", "expected dtype float32"),
        ("NonBoolFlagEnv", "contract.flags_bool", "expected truncated to be a bool, got 0 (int)"),
        ("LyingTimeLimitEnv", "contract.time_limit", "declares max_episode_steps=10 but ran 25"),
        ("ShortTimeLimitEnv", "contract.time_limit", "truncates every episode at step 8"),
        ("InfoNotDictEnv", "contract.info_dict", "expected info to be a dict, got [1] (list)"),
    ],
)
def test_contract_check_fails_on_its_broken_env(env: str, check: str, words: str) -> None:
    report = validate(BROKEN + env, levels=("contract",), quiet=True)
    assert report.exit_code == 1
    failures = {result.check: result.detail for result in report.failures}
    assert check in failures, failures
    assert words in failures[check]
    assert "episode" in failures[check] or "seed" in failures[check]  # names where


@pytest.mark.parametrize(
    "env",
    [
        "CartPole-v1",  # classic control, with rgb_array rendering and a time limit
        "FrozenLake-v1",  # toy text, ansi rendering
        "Blackjack-v1",  # toy text, tuple observations
        "openenv_gym.testing.envs:DictTupleEnv",  # the project's own: composite spaces
        BROKEN + "GoodEnv",
    ],
)
def test_contract_passes_on_good_envs(env: str) -> None:
    report = validate(env, levels=("contract",), quiet=True)
    assert report.exit_code == 0, [str(failure) for failure in report.failures]
    checks = {result.check: result.status for result in report.results}
    for check in (
        "contract.obs_in_space",
        "contract.matches_in_process",
        "contract.check_env",
        "contract.vector_same_step",
        "contract.state",
    ):
        assert checks[check] == "pass", (check, checks)


def test_contract_declared_nondeterministic_spec_warns_instead_of_failing() -> None:
    from openenv_gym.testing.broken_envs import DECLARED_NONDETERMINISTIC

    report = validate(BROKEN + DECLARED_NONDETERMINISTIC, levels=("contract",), quiet=True)
    assert report.exit_code == 0, [str(failure) for failure in report.failures]
    statuses = {result.check: result.status for result in report.results}
    assert statuses["contract.seed_determinism"] == "warn"
    assert statuses["contract.matches_in_process"] == "warn"
