"""The trust-boundary campaign (issue 11) against local servers: every attack withstood.

Each test is one attack of :mod:`openenv_gym.testing.compliance`; the campaign runs once per
session over the attacks selected (``-k render`` runs one), attacks needing the same server
sharing it, and each test asserts its attack passed, with the figures in the message.
``pytest -s`` prints every result as it comes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from openenv_gym.testing.compliance import ATTACKS, Attack, AttackResult, run_attack, run_campaign
from openenv_gym.testing.compliance._support import Target, result
from openenv_gym.testing.optional import unavailable

NAMES = [attack.name for attack in ATTACKS]
NEEDS_DOCKER = {attack.name for attack in ATTACKS if attack.docker}


@pytest.fixture(scope="module")
def results(request: pytest.FixtureRequest) -> dict[str, AttackResult]:
    """The results of the attacks this session selected, run as one campaign."""
    selected = {
        item.callspec.params["name"]
        for item in request.session.items
        if hasattr(item, "callspec") and "name" in item.callspec.params
    }
    chosen = [attack for attack in ATTACKS if attack.name in selected]
    return {outcome.name: outcome for outcome in run_campaign(chosen, on_result=print)}


@pytest.mark.parametrize("name", NAMES)
def test_attack_is_withstood_by_the_server(name: str, results: dict[str, AttackResult]) -> None:
    outcome = results[name]
    if not outcome.runnable and name in NEEDS_DOCKER:
        # A skip (a failure under OPENENV_GYM_REQUIRE_ALL / _DOCKER, as CI sets), like every test
        # that needs a Docker engine.
        unavailable("docker", f"{name}: {outcome.detail}; install one (Debian: docker.io)")
    assert outcome.runnable, str(outcome)
    assert outcome.passed, str(outcome)


def test_attack_needing_a_missing_flag_is_reported_not_runnable() -> None:
    attack = Attack("needs_a_flag", lambda target: result("x", {}, {}), args=("--no-such-flag",))
    outcome = run_attack(attack)
    assert (outcome.passed, outcome.runnable) == (False, False)
    assert outcome.detail == "not runnable: flag missing: --no-such-flag"


def test_attack_that_breaks_off_is_a_failed_result_naming_the_error() -> None:
    def broken(target: Target) -> AttackResult:
        raise RuntimeError(f"cannot reach {target.url}")

    outcome = run_campaign([Attack("broken", broken)])[0]
    assert not outcome.passed and outcome.runnable
    assert outcome.detail.startswith("error: RuntimeError: cannot reach ws://127.0.0.1:")
    assert "attack_seconds" in outcome.figures


def test_attack_result_text_shows_the_verdict_and_figures() -> None:
    outcome = result("demo", {"peak under 300 MiB": False}, {"peak_rss_mib": 412.25})
    assert str(outcome) == "demo: FAIL [peak_rss_mib=412.2] failed: peak under 300 MiB"


def _opened(name: str, *more_args: str) -> AttackResult:
    """Run attack ``name`` against a server whose operator opened the hole on purpose."""
    attack = next(attack for attack in ATTACKS if attack.name == name)
    return run_attack(dataclasses.replace(attack, args=(*attack.args, *more_args)))


def test_attack_origin_fails_against_a_server_admitting_that_origin() -> None:
    outcome = _opened("origin_and_host", "--allow-origin", "http://evil.example")
    assert not outcome.passed, str(outcome)
    assert outcome.figures["origin_status"] == 101
    assert "a foreign Origin is refused with 403" in outcome.detail


def test_attack_safety_kwargs_fails_against_a_server_allowing_timeout() -> None:
    outcome = _opened("safety_kwargs", "--env-kwargs-allow", "timeout")
    assert not outcome.passed, str(outcome)
    assert outcome.detail == "failed: MAKE timeout= refused naming it"


def test_attack_observe_origin_fails_against_a_server_admitting_that_origin() -> None:
    outcome = _opened("observe_origin_and_host", "--allow-origin", "http://evil.example")
    assert not outcome.passed, str(outcome)
    assert outcome.figures["/metrics_origin"] == 200
    assert "/metrics refuses a foreign Origin (403)" in outcome.detail


def test_attack_needing_docker_without_an_engine_is_reported_not_runnable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    socket = f"unix://{tmp_path}/no-engine.sock"  # a Docker host nothing listens on
    monkeypatch.setenv("DOCKER_HOST", socket)
    ran: list[Target] = []

    def attack_run(target: Target) -> AttackResult:
        ran.append(target)
        return result("needs_docker", {}, {})

    outcome = run_attack(Attack("needs_docker", attack_run, docker=True))
    assert (outcome.passed, outcome.runnable, ran) == (False, False, [])
    expected = f"not runnable: needs a Docker engine: no Docker engine answers at {socket}"
    assert outcome.detail.startswith(expected), outcome.detail
