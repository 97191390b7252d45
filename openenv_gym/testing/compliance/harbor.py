"""Harbor task directories, attacked from a client: paths, operator switches, command floods.

The target hosts ``harbor:`` + :data:`~openenv_gym.testing.harbor_tasks.TASKS_DIR` with the
operator's defaults (no oracle, no sandbox API). A client may pick a task of that directory by
name, and nothing else: not another directory, not a path, not a name with separators; it
cannot switch on the oracle or the sandbox calls; and a flood of output or processes from an
episode stays inside its container's bounds, which are gone once the episode is closed.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from openenv_gym.client.env import RemoteEnv
from openenv_gym.errors import OpenEnvError
from openenv_gym.testing.compliance._support import (
    AttackResult,
    Target,
    failed,
    result,
    wait_for,
)
from openenv_gym.testing.harbor_tasks import TASKS_DIR

__all__ = ["HARBOR_SPEC", "attack_harbor_command_flood", "attack_harbor_paths"]

HARBOR_SPEC = f"harbor:{TASKS_DIR}"
"""The spec the target hosts."""
HARBOR_ID = "harbor:harbor_tasks"
"""The id clients name it by."""
TASK = "hello-file"


def _refused(call: Any) -> str | None:
    """Run ``call``; return the name of the error it raised, or ``None`` if it succeeded."""
    try:
        call()
    except (OpenEnvError, LookupError, ValueError, TypeError, PermissionError) as exc:
        return type(exc).__name__
    return None


def _task_containers() -> list[str]:
    from openenv_gym.interop.harbor.container import live_task_containers

    return [c.id for c in live_task_containers(all_owners=True)]


def attack_harbor_paths(target: Target) -> AttackResult:
    """Name paths: other directories, ``..`` and absolute task names, the tasks kwarg, switches."""
    name = "harbor_paths"
    checks: dict[str, bool] = {}
    try:
        others = ("harbor:/etc", "harbor:etc", HARBOR_SPEC, f"{HARBOR_SPEC}/..", "harbor:..")
        for spec in others:
            checks[f"spec {spec} not hosted"] = (
                _refused(lambda s=spec: RemoteEnv(s, url=target.url).close()) is not None
            )
        checks["tasks kwarg refused"] = (
            _refused(lambda: RemoteEnv(HARBOR_ID, url=target.url, tasks="/etc").close()) is not None
        )
        checks["oracle kwarg refused"] = (
            _refused(lambda: RemoteEnv(HARBOR_ID, url=target.url, oracle=True).close()) is not None
        )
        env: RemoteEnv[Any, Any] = RemoteEnv(HARBOR_ID, url=target.url, call_timeout=120)
        try:
            for task in ("../hello-file", "/etc/passwd", "..", ".", "hello-file/../word-count", ""):
                checks[f"task {task!r} refused"] = (
                    _refused(lambda t=task: env.reset(options={"task": t})) is not None
                )
            env.reset(options={"task": TASK})
            checks["oracle action refused"] = _refused(lambda: env.step("oracle")) is not None
            checks["exec call refused"] = _refused(lambda: env.call("exec", "id")) is not None
            checks["download call refused"] = (
                _refused(lambda: env.call("download", "/etc/passwd")) is not None
            )
        finally:
            env.close()
    except OpenEnvError as exc:
        return failed(name, exc)
    return result(name, checks, {"checks": len(checks)})


def _second_episode_answers(target: Target) -> bool:
    other: RemoteEnv[Any, Any] = RemoteEnv(HARBOR_ID, url=target.url, call_timeout=120)
    try:
        other.reset(options={"task": TASK})
        obs, _, _, _, _ = other.step("echo ok")
        return bool(obs["stdout"] == "ok\n")
    finally:
        other.close()


def attack_harbor_command_flood(target: Target) -> AttackResult:
    """Flood from an episode: output, a fork bomb, an oversized command; then leave nothing.

    Background processes persist between commands, as in Harbor (a task may ask for a
    service), so a fork bomb fills its own container's pids limit: the episode still answers
    (with the shell's failure), other episodes are untouched, and closing removes it all.
    """
    name = "harbor_command_flood"
    env: RemoteEnv[Any, Any] = RemoteEnv(HARBOR_ID, url=target.url, call_timeout=120)
    try:
        obs, _ = env.reset(options={"task": TASK})
        started = time.monotonic()
        flood, _, _, _, flood_info = env.step("head -c 50000000 /dev/zero | tr '\\0' x")
        flood_seconds = time.monotonic() - started
        env.step("bomb() { bomb | bomb & }; bomb; sleep 2")
        oversized = _refused(lambda: env.step("x" * 5000))
        started = time.monotonic()
        after, _, _, _, _ = env.step("echo alive")
        after_seconds = time.monotonic() - started
        container = env.call("state")["container"]
        others_fine = _second_episode_answers(target)
    except OpenEnvError as exc:
        env.close()
        return failed(name, exc)
    finally:
        with contextlib.suppress(OpenEnvError):
            env.close()
    gone = wait_for(lambda: container not in _task_containers(), 30)
    return result(
        name,
        {
            "flooded output observed within max_output": len(flood["stdout"]) <= 4096
            and bool(flood_info["output_truncated"]),
            "the bombed episode still answers": isinstance(after["exit_code"], int),
            "another episode is untouched": others_fine,
            "oversized command refused": oversized is not None,
            "container removed at close": gone is not None,
        },
        {
            "flood_seconds": round(flood_seconds, 2),
            "after_bomb_seconds": round(after_seconds, 2),
            "first_obs_chars": len(obs["stdout"]),
        },
    )
