"""Targets other than a hosted spec: an OpenEnv server, a Docker image, nothing at all."""

from __future__ import annotations

from typing import Any

import pytest

from openenv_gym.testing.validate import validate

WORD_GUESS = "openenv_gym.testing.openenv_echo:WordGuessEnv"


def test_validate_openenv_server_passes_protocol_and_contract() -> None:
    from openenv_gym.providers.local import LocalProvider
    from openenv_gym.testing.optional import require_module

    require_module("openenv", family="openenv", install='pip install -e ".[bench]"')
    with LocalProvider([WORD_GUESS]) as provider:  # our server, speaking OpenEnv on /ws
        url = "openenv+ws://" + provider.urls[0].split("://", 1)[1]
        report = validate(url, levels=("protocol", "contract"), quiet=True)
    # The image has no pygame: CartPole declares rgb_array but cannot render it there, and
    # validate says so. Any other failure is a defect.
    failures = {result.check: result.detail for result in report.failures}
    assert set(failures) <= {"contract.render_modes"}, failures
    if failures:
        assert "pygame is not installed" in failures["contract.render_modes"]
    statuses = {result.check: result.status for result in report.results}
    for check in (
        "protocol.handshake",
        "protocol.error_replies",
        "protocol.malformed_input",
        "protocol.reconnect",
        "contract.obs_in_space",
        "contract.check_env",
    ):
        assert statuses[check] == "pass", (check, statuses)


def test_validate_docker_image_with_its_token(docker_image: str, containers_before: Any) -> None:
    report = validate(
        f"docker:{docker_image}",
        env_id="CartPole-v1",
        levels=("protocol", "contract"),
        quiet=True,
    )
    # The image has no pygame: CartPole declares rgb_array but cannot render it there, and
    # validate says so. Any other failure is a defect.
    failures = {result.check: result.detail for result in report.failures}
    assert set(failures) <= {"contract.render_modes"}, failures
    if failures:
        assert "pygame is not installed" in failures["contract.render_modes"]
    statuses = {result.check: result.status for result in report.results}
    assert statuses["protocol.malformed_input"] == "pass"  # the fuzzer presents the token
    assert statuses["protocol.origin"] == "skip"  # a token server: the attack needs none
    assert statuses["contract.matches_in_process"] == "pass"


@pytest.mark.parametrize("kind", ["url", "openenv", "docker"])
def test_validate_unreachable_target_exits_2(kind: str) -> None:
    from openenv_gym.testing.compliance._support import free_port

    port = free_port()
    target = {
        "url": f"ws://127.0.0.1:{port}",
        "openenv": f"openenv+ws://127.0.0.1:{port}",
        "docker": "docker:no-such-image-for-validate:0",
    }[kind]
    report = validate(target, levels=("contract",), env_id="CartPole-v1", quiet=True)
    assert report.exit_code == 2
    assert report.unreachable is not None and "cannot" in report.unreachable
    assert not report.results
