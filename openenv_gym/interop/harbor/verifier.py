"""Harbor's verifier and oracle, step for step as Harbor 0.25 runs them in a shared environment.

The verifier (``harbor.verifier.verifier.Verifier.verify`` inside the trial's
``asyncio.wait_for(..., verifier timeout)``):

1. remove ``/logs/verifier/reward.txt`` and ``reward.json`` (as root);
2. copy ``tests/`` to ``/tests``; ``chmod +x /tests/test.sh`` (as root);
3. run ``(/tests/test.sh) > /logs/verifier/test-stdout.txt 2>&1`` with ``[verifier] env``,
   as ``[verifier] user`` (default: the image's user), within ``[verifier] timeout_sec``;
4. read ``reward.json``, else ``reward.txt``
   (:func:`~openenv_gym.interop.harbor.task.parse_rewards`).

The oracle (``harbor.agents.oracle.OracleAgent.run``): copy ``solution/`` to ``/solution``,
``chmod +x``, run ``(/solution/solve.sh) > /logs/agent/oracle.txt 2>&1`` with
``DEBIAN_FRONTEND=noninteractive`` and ``[solution] env``, as ``[agent] user``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

from openenv_gym.envs.sandbox import CommandResult
from openenv_gym.interop.harbor.container import TaskContainer
from openenv_gym.interop.harbor.task import HarborTask, RewardFileError, parse_rewards

__all__ = ["MAX_REWARD_BYTES", "VerifierOutcome", "run_oracle", "run_verifier"]

MAX_REWARD_BYTES = 1 << 20
"""Bytes of a reward file (and of the test output) read back, at most."""
_REWARD_TXT = "/logs/verifier/reward.txt"
_REWARD_JSON = "/logs/verifier/reward.json"
_TEST_STDOUT = "/logs/verifier/test-stdout.txt"  # Harbor's trial_paths.test_stdout_path


@dataclasses.dataclass(frozen=True)
class VerifierOutcome:
    """What a verifier run gave.

    Attributes:
        reward: the scalar reward: ``rewards["reward"]``, else the mean of the components,
            else 0.0 (no reward: see ``error``).
        rewards: every named component (empty if the verifier failed).
        exit_code: the test script's exit code (124 after its timeout).
        stdout: ``test-stdout.txt`` (its first :data:`MAX_REWARD_BYTES`).
        timed_out: the script outlived ``[verifier] timeout_sec``.
        seconds: the verifier's wall time.
        error: why there is no reward (Harbor's exception name and text), else ``None``.

    """

    reward: float
    rewards: Mapping[str, float]
    exit_code: int
    stdout: bytes
    timed_out: bool
    seconds: float
    error: str | None = None


def scalar_reward(rewards: Mapping[str, float]) -> float:
    """Return ``rewards["reward"]``, else the mean of the components, else 0.0."""
    if "reward" in rewards:
        return float(rewards["reward"])
    return sum(rewards.values()) / len(rewards) if rewards else 0.0


def _chmod_and_run(
    container: TaskContainer,
    script: str,
    log: str,
    *,
    env: Mapping[str, str],
    user: str | None,
    timeout: float,
) -> CommandResult:
    run = f"({script}) > {log} 2>&1"
    if user in (None, "root", "0") and (user is not None or container.default_root):
        # Harbor's chmod (as root) and run, in one round trip: the same user does both.
        return container.exec(f"chmod +x {script} && {run}", env=env, user=user, timeout=timeout)
    container.exec(f"chmod +x {script}", user="root", timeout=30)
    return container.exec(run, env=env, user=user, timeout=timeout)


def run_verifier(
    container: TaskContainer, task: HarborTask, *, env: Mapping[str, str]
) -> VerifierOutcome:
    """Grade the container's state with ``task``'s tests, as Harbor does (module docstring).

    Raises:
        RuntimeError: the container is gone (e.g. killed by its memory limit).

    """
    start = time.monotonic()
    container.put_dir(task.tests_dir, "/tests", before=f"rm -f -- {_REWARD_TXT} {_REWARD_JSON}")
    result = _chmod_and_run(
        container,
        "/tests/test.sh",
        _TEST_STDOUT,
        env=env,
        user=task.verifier_user,
        timeout=task.verifier_timeout,
    )
    # As Harbor, download /logs/verifier once and read the files there.
    names = ["test-stdout.txt", "reward.json", "reward.txt"]
    try:
        files = container.read_files("/logs/verifier", names, limit=MAX_REWARD_BYTES)
    except ValueError:  # the tests left large logs there: read the three files one by one
        found = {
            name: container.read_file(f"/logs/verifier/{name}", limit=MAX_REWARD_BYTES)
            for name in names
        }
        files = {name: data for name, data in found.items() if data is not None}
    stdout = files.get("test-stdout.txt", b"")
    if result.timed_out:
        error = (
            f"VerifierTimeoutError: verifier execution timed out after "
            f"{task.verifier_timeout:g} seconds"
        )
        return VerifierOutcome(
            0.0, {}, result.exit_code, stdout, True, time.monotonic() - start, error
        )
    try:
        rewards = parse_rewards(files.get("reward.json"), files.get("reward.txt"))
    except (RewardFileError, ValueError) as exc:
        return VerifierOutcome(
            0.0,
            {},
            result.exit_code,
            stdout,
            False,
            time.monotonic() - start,
            f"{type(exc).__name__}: {exc}",
        )
    return VerifierOutcome(
        scalar_reward(rewards), rewards, result.exit_code, stdout, False, time.monotonic() - start
    )


def run_oracle(
    container: TaskContainer, task: HarborTask, *, env: Mapping[str, str], timeout: float
) -> CommandResult:
    """Run ``task``'s ``solution/solve.sh`` as Harbor's oracle agent does; return its output.

    The result's stdout is ``/logs/agent/oracle.txt`` (where the script's output goes).

    Raises:
        FileNotFoundError: the task has no ``solution/solve.sh``.

    """
    if not (task.solution_dir / "solve.sh").is_file():
        raise FileNotFoundError(f"task {task.name!r}: solution/solve.sh not found")
    container.put_dir(task.solution_dir, "/solution")
    result = _chmod_and_run(
        container,
        "/solution/solve.sh",
        "/logs/agent/oracle.txt",
        env={"DEBIAN_FRONTEND": "noninteractive", **env},
        user=task.agent_user,
        timeout=timeout,
    )
    log = container.read_file("/logs/agent/oracle.txt", limit=MAX_REWARD_BYTES) or b""
    return dataclasses.replace(result, stdout=log, stdout_size=len(log))
