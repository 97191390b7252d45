"""The protocol level passes on this project's server and fails on one that dies on bad input."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from openenv_gym.testing.validate import validate


@pytest.fixture
def fragile_url() -> Iterator[str]:
    """The fragile server of ``broken_envs``, on a free port (stopped after the test)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "openenv_gym.testing.broken_envs", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()  # printed once it listens
        assert url.startswith("ws://127.0.0.1:"), url
        yield url
    finally:
        process.kill()
        process.wait(10)


def test_protocol_malformed_input_fails_on_a_server_that_dies(fragile_url: str) -> None:
    report = validate(fragile_url, levels=("protocol",), quiet=True)
    assert report.exit_code == 1
    failures = {result.check: result.detail for result in report.failures}
    assert "protocol.malformed_input" in failures, failures
    assert "the server died" in failures["protocol.malformed_input"]
    assert re.search(r"input \d+ \(\w+", failures["protocol.malformed_input"])  # which input
    passed = {r.check for r in report.results if r.status == "pass"}
    assert {"protocol.handshake", "protocol.messages", "protocol.limits"} <= passed


def test_protocol_passes_on_the_project_server() -> None:
    report = validate("CartPole-v1", levels=("protocol",), quiet=True)
    assert report.exit_code == 0, [str(failure) for failure in report.failures]
    statuses = {result.check: result.status for result in report.results}
    assert statuses == dict.fromkeys(
        [
            "protocol.handshake",
            "protocol.messages",
            "protocol.error_replies",
            "protocol.limits",
            "protocol.reconnect",
            "protocol.origin",
            "protocol.malformed_input",
        ],
        "pass",
    )
    malformed = next(r for r in report.results if r.check == "protocol.malformed_input")
    assert sum(malformed.figures["outcomes"].values()) >= malformed.figures["inputs"]
