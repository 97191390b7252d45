"""The fault scenarios of :mod:`openenv_gym.testing.compliance`, each on a server of its own.

Each test damages its server (kills, stops or terminates it, or kills a client of it) and
asserts that the scenario's clients and server behaved; the detail in the message says how.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

import pytest

from openenv_gym.providers.local import LocalProvider
from openenv_gym.testing.compliance import Target
from openenv_gym.testing.compliance.faults import FAULTS, HUNG_ENV_ARGS, SLOW, alive, run_fault


@contextlib.contextmanager
def _victim(specs: list[str], args: tuple[str, ...] = ("--workers", "1")) -> Iterator[Target]:
    with LocalProvider(specs, extra_args=list(args)) as provider:
        pid = provider.pids[0]
        try:
            yield Target(provider.urls[0], pid)
        finally:
            if alive(pid):  # a SIGSTOPped server would not hear SIGTERM
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("kill -9 mid-run", {"timeout": 3.0}),
        ("SIGSTOP (hung server)", {"timeout": 1.0}),
        ("SIGTERM (graceful shutdown)", {"timeout": 3.0}),
        ("client killed mid-episode", {"timeout": 5.0}),
    ],
)
def test_fault_is_survived(name: str, options: dict[str, float]) -> None:
    with _victim(["CartPole-v1"]) as target:
        outcome = run_fault(name, target, **options)
    assert outcome.name == name
    assert outcome.passed, str(outcome)


def test_fault_hung_env_does_not_stall_other_sessions() -> None:
    with _victim(["CartPole-v1", SLOW], HUNG_ENV_ARGS) as target:
        outcome = run_fault("hung env (--threads)", target, delay=1.5)
    assert outcome.passed, str(outcome)


def test_fault_that_breaks_off_is_a_failed_result() -> None:
    outcome = run_fault("SIGSTOP (hung server)", Target("ws://127.0.0.1:9", None))
    assert not outcome.passed
    assert outcome.detail.startswith("error: AssertionError: a fault needs the server's pid")


def test_fault_scenarios_are_all_tested() -> None:
    assert set(FAULTS) == {
        "kill -9 mid-run",
        "SIGSTOP (hung server)",
        "SIGTERM (graceful shutdown)",
        "client killed mid-episode",
        "hung env (--threads)",
    }
