"""TerminalEnv isolation, tried from inside an episode hosted by a server.

The target hosts ``openenv_gym.envs.terminal:TerminalEnv`` (operator-fixed
``allow_outside_container=true``) and requires ``target.token``, which the server holds in its
environment as ``$OPENENV_GYM_TOKEN`` beside a canary variable whose value starts with
:data:`CANARY_PREFIX`. No command an episode runs may see either, nor touch another episode,
nor leave a process behind.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from openenv_gym.client.env import RemoteEnv
from openenv_gym.errors import OpenEnvError
from openenv_gym.testing.compliance._support import (
    AttackResult,
    Target,
    failed,
    not_runnable,
    result,
    wait_for,
)
from openenv_gym.testing.rawws import open_fds

__all__ = [
    "CANARY_PREFIX",
    "attack_terminal_other_workdir",
    "attack_terminal_server_environ",
    "attack_terminal_setsid_escape",
]

CANARY_PREFIX = "openenv-compliance-canary-"
"""The value of the server's canary variable starts so; no episode may read it."""

TERMINAL = "openenv_gym.envs.terminal:TerminalEnv"


def _episode(target: Target) -> RemoteEnv[Any, Any]:
    env: RemoteEnv[Any, Any] = RemoteEnv(
        TERMINAL, url=target.url, token=target.token, call_timeout=60
    )
    try:
        env.reset(options={"task": "hello-file"})
    except BaseException:
        env.close()
        raise
    return env


def _run(env: RemoteEnv[Any, Any], command: str) -> tuple[dict[str, Any], float, bool]:
    obs, reward, terminated, _, _ = env.step(command)
    return dict(obs), float(reward), bool(terminated)


def attack_terminal_server_environ(target: Target) -> AttackResult:
    """Read the server's environment from an episode (``/proc/$PPID/environ`` and the rest)."""
    name = "terminal_server_environ"
    if not target.token:
        return not_runnable(name, "the target must hold a token in its environment")
    commands = [
        "tr '\\0' '\\n' < /proc/$PPID/environ",
        "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'",
        "env",
    ]
    try:
        env = _episode(target)
        try:
            outputs = [str(_run(env, command)[0].get("stdout", "")) for command in commands]
        finally:
            env.close()
    except OpenEnvError as exc:
        return failed(name, exc)
    leaked_token = [c for c, out in zip(commands, outputs, strict=True) if target.token in out]
    leaked_canary = [c for c, out in zip(commands, outputs, strict=True) if CANARY_PREFIX in out]
    return result(
        name,
        {
            "no command saw the server's token": not leaked_token,
            "no command saw the server's canary variable": not leaked_canary,
        },
        {
            "token_seen_by": "; ".join(leaked_token) or "-",
            "canary_seen_by": "; ".join(leaked_canary) or "-",
            "ppid_environ_bytes": len(outputs[0]),
        },
    )


def attack_terminal_other_workdir(target: Target) -> AttackResult:
    """Episode A writes the answer into episode B's workdir: B must not be scored for it."""
    name = "terminal_other_workdir"
    try:
        a, b = _episode(target), None
        try:
            b = _episode(target)
            workdir = str(_run(b, "pwd")[0].get("stdout", "")).strip()
            write = _run(a, f"echo 'Hello, terminal!' > {workdir}/hello.txt")[0]
            listing = _run(a, f"ls -A {workdir}")[0]
            _, reward, solved = _run(b, "true")
        finally:
            a.close()
            if b is not None:
                b.close()
    except OpenEnvError as exc:
        return failed(name, exc)
    return result(
        name,
        {
            "A cannot write B's workdir": write.get("exit_code") != 0,
            "A cannot list B's workdir": listing.get("exit_code") != 0,
            "B is not scored for A's write": reward == 0.0 and not solved,
        },
        {
            "b_workdir": workdir,
            "write_exit_code": write.get("exit_code"),
            "b_reward_for_true": reward,
        },
    )


def _processes_running(argument: str) -> list[int]:
    """Pids of live processes with ``argument`` among their arguments."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                arguments = cmdline.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as stat:
                state = stat.read().rpartition(")")[2].split()[0]
            if argument.encode() in arguments and state not in "ZX":
                found.append(int(entry))
    return found


def attack_terminal_setsid_escape(target: Target, *, rounds: int = 3) -> AttackResult:
    """``setsid sleep N &`` in ``rounds`` episodes: no process, thread or fd may outlive them."""
    name = "terminal_setsid_escape"
    if target.pid is None:
        return not_runnable(name, "needs the server's pid to count its threads and fds")
    pid = target.pid
    duration = f"1000.{int.from_bytes(os.urandom(2), 'big')}"

    def counts() -> tuple[int, int]:
        return len(os.listdir(f"/proc/{pid}/task")), open_fds(pid)

    try:
        _episode(target).close()  # warm up: lazily started threads are no leak
        before = counts()
        for _ in range(rounds):
            env = _episode(target)
            try:
                _run(env, f"setsid sleep {duration} > /dev/null 2>&1 & echo started")
            finally:
                env.close()
    except OpenEnvError as exc:
        return failed(name, exc)
    gone = wait_for(lambda: not _processes_running(duration), 5.0)
    settled = wait_for(lambda: counts()[1] <= before[1], 5.0)
    after = counts()
    left = _processes_running(duration)
    for leftover in left:  # do not leave the attack's processes behind either
        with contextlib.suppress(OSError):
            os.kill(leftover, 9)
    return result(
        name,
        {
            "no escaped process outlived its episode": gone is not None,
            "the server's descriptors are back to before": settled is not None,
        },
        {
            "processes_left": len(left),
            "threads_before": before[0],
            "threads_after": after[0],
            "fds_before": before[1],
            "fds_after": after[1],
        },
    )
