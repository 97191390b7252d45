"""Fault scenarios: what clients see when a server dies, hangs, stops, or a client is killed.

Each scenario takes a :class:`Target` (a server it may damage: give each one a server of its
own) and returns an :class:`AttackResult` whose ``passed`` says whether clients and server
behaved. ``kill -9`` mid-run (the client raises ``ConnectionLostError`` naming the URL within
its call timeout), ``SIGSTOP`` (a ``CallTimeoutError``; after ``SIGCONT`` the same connection
works again), ``SIGTERM`` (every client gets the going-away close 1001 and the server exits), a
client process killed mid-episode (the others are still served, descriptors are released) and,
on a ``--threads`` server allowing SlowEnv's ``delay``, an env that hangs.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from openenv_gym.errors import CallTimeoutError, ConnectError, ConnectionLostError, OpenEnvError
from openenv_gym.testing.compliance._support import AttackResult, Target, failed, wait_for
from openenv_gym.testing.compliance.leaks import settle_fds
from openenv_gym.testing.rawws import open_fds

__all__ = [
    "FAULTS",
    "alive",
    "fault_client_killed",
    "fault_hung_env",
    "fault_kill9",
    "fault_sigstop",
    "fault_sigterm",
    "run_fault",
]

CARTPOLE = "CartPole-v1"
SLOW = "openenv_gym.testing.envs:SlowEnv"
HUNG_ENV_ARGS = ("--workers", "1", "--threads", "--env-kwargs-allow", "delay")
"""The server :func:`fault_hung_env` needs (hosting CartPole and :data:`SLOW`)."""


def _clients() -> tuple[Any, Any]:
    from openenv_gym.client.env import RemoteEnv
    from openenv_gym.client.vector_env import RemoteVectorEnv

    return RemoteEnv, RemoteVectorEnv


def alive(pid: int) -> bool:
    """Tell whether ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _pid(target: Target) -> int:
    assert target.pid is not None, "a fault needs the server's pid"
    return target.pid


def fault_kill9(target: Target, *, timeout: float = 5.0) -> AttackResult:
    """``kill -9`` while a vector env steps: ``ConnectionLostError`` naming the URL in time."""
    remote_env, remote_vector_env = _clients()
    url, name = target.url, "kill -9 mid-run"
    env = remote_vector_env(CARTPOLE, 8, urls=[url], call_timeout=timeout)
    env.reset(seed=0)
    outcome: dict[str, Any] = {}
    steps = [0]

    def stepper() -> None:
        actions = np.zeros(8, dtype=np.int64)
        end = time.monotonic() + timeout + 10
        try:
            while time.monotonic() < end:
                env.step(actions)
                steps[0] += 1
        except Exception as exc:
            outcome.update(exc=exc, at=time.monotonic())

    thread = threading.Thread(target=stepper, daemon=True)
    thread.start()
    wait_for(lambda: steps[0] >= 3, timeout)  # the client is mid-run
    killed = time.monotonic()
    os.kill(_pid(target), signal.SIGKILL)
    thread.join(timeout + 12)
    exc, waited = outcome.get("exc"), outcome.get("at", float("inf")) - killed
    typed = isinstance(exc, ConnectionLostError) and url in str(exc) and waited <= timeout
    try:
        env.close()
        closed = True
    except Exception:
        closed = False
    try:
        remote_env(CARTPOLE, url=url, connect_timeout=2.0).close()
        reconnect = "connected to a dead server"
    except ConnectError as error:
        reconnect = "" if url in str(error) else f"ConnectError without the URL: {error}"
    except Exception as error:
        reconnect = f"{type(error).__name__}: {error}"
    detail = (
        f"{type(exc).__name__} after {waited:.3f} s: {exc}; close() {'ok' if closed else 'raised'}"
        + (f"; reconnect: {reconnect}" if reconnect else "; reconnect: ConnectError")
    )
    return AttackResult(
        name, typed and closed and not reconnect, {"seconds_to_error": waited}, detail
    )


def fault_sigstop(target: Target, *, timeout: float = 1.0) -> AttackResult:
    """``SIGSTOP``: a ``CallTimeoutError`` in time; after ``SIGCONT`` the connection works."""
    remote_env, _ = _clients()
    url, pid = target.url, _pid(target)
    env = remote_env(CARTPOLE, url=url, call_timeout=timeout)
    env.reset(seed=0)
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        try:
            env.step(np.int64(0))
            exc: Exception | None = None
        except Exception as error:
            exc = error
        waited = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    typed = isinstance(exc, CallTimeoutError) and url in str(exc)
    bounded = timeout <= waited < timeout + 1.0
    try:  # the same connection works again; the late reply is dropped, the step counted once
        obs = env.step(np.int64(1))[0]
        recovered = obs.shape == (4,) and env.state()["step_count"] == 2
    except Exception as error:
        recovered, exc = False, error
    env.close()
    detail = (
        f"{type(exc).__name__} after {waited:.3f} s (timeout {timeout:g} s); "
        f"after SIGCONT the connection {'works' if recovered else 'is broken'}"
    )
    ok = typed and bounded and recovered
    return AttackResult("SIGSTOP (hung server)", ok, {"seconds_to_error": waited}, detail)


def fault_sigterm(target: Target, *, timeout: float = 5.0, clients: int = 4) -> AttackResult:
    """``SIGTERM``: every client gets close 1001 (``ConnectionLostError``); the server exits."""
    remote_env, _ = _clients()
    pid = _pid(target)
    envs = [remote_env(CARTPOLE, url=target.url, call_timeout=timeout) for _ in range(clients)]
    for env in envs:
        env.reset(seed=0)
    os.kill(pid, signal.SIGTERM)
    errors: list[Exception | None] = []
    for env in envs:
        end = time.monotonic() + timeout
        try:
            while time.monotonic() < end:
                if any(env.step(np.int64(0))[2:4]):
                    env.reset()
            errors.append(None)
        except Exception as exc:
            errors.append(exc)
    going_away = sum(isinstance(e, ConnectionLostError) and "1001" in str(e) for e in errors)
    exited = wait_for(lambda: not alive(pid), 8.0) is not None
    for env in envs:
        env.close()
    detail = (
        f"{going_away}/{len(envs)} clients got close 1001; server "
        f"{'exited' if exited else 'still running'}; e.g. {errors[0]}"
    )
    ok = going_away == len(envs) and exited
    return AttackResult("SIGTERM (graceful shutdown)", ok, {"going_away": going_away}, detail)


VICTIM = textwrap.dedent(
    """
    import sys, numpy as np, openenv_gym
    env = openenv_gym.RemoteVectorEnv("CartPole-v1", 4, urls=[sys.argv[1]])
    env.reset(seed=0)
    for _ in range(5):
        env.step(np.zeros(4, dtype=np.int64))
    env.step_async(np.zeros(4, dtype=np.int64))  # a request in flight when it dies
    print("stepping", flush=True)
    sys.stdin.read()
    """
)


def _run_victim(url: str, pid: int) -> tuple[str, int]:
    """Start a client process, kill it mid-episode; return its line and the fds it held."""
    victim = subprocess.Popen(
        [sys.executable, "-c", VICTIM, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert victim.stdout is not None
        ready, _, _ = select.select([victim.stdout], [], [], 60)
        line = victim.stdout.readline() if ready else ""
        during = open_fds(pid)
        os.kill(victim.pid, signal.SIGKILL)  # ours, by pid
        victim.wait(10)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait(10)
        for stream in (victim.stdin, victim.stdout):
            if stream is not None:
                stream.close()
    return line, during


def fault_client_killed(target: Target, *, timeout: float = 5.0) -> AttackResult:
    """Kill a client process mid-episode: others must be served, its descriptors released."""
    remote_env, _ = _clients()
    url, pid = target.url, _pid(target)
    bystander = remote_env(CARTPOLE, url=url, call_timeout=timeout)
    bystander.reset(seed=0)
    baseline = open_fds(pid)
    line, during = _run_victim(url, pid)
    served = 0
    with contextlib.suppress(OpenEnvError):
        for _ in range(20):
            if any(bystander.step(np.int64(1))[2:4]):
                bystander.reset()
            served += 1
        with remote_env(CARTPOLE, url=url, call_timeout=timeout) as fresh:
            fresh.reset(seed=1)
            fresh.step(np.int64(0))
            served += 1
    after = settle_fds(pid, baseline)
    bystander.close()
    detail = (
        f"victim {'ran' if line else 'never started'}; server fds {baseline} -> {during} "
        f"(victim connected) -> {after} after the kill; {served}/21 requests of others served"
    )
    ok = line == "stepping\n" and served == 21 and after <= baseline
    return AttackResult("client killed mid-episode", ok, {"fds_after": after}, detail)


def fault_hung_env(target: Target, *, delay: float = 1.5) -> AttackResult:
    """Hang an env for ``delay`` s: its client must time out, another session be served."""
    remote_env, _ = _clients()
    hung = remote_env(SLOW, url=target.url, delay=delay, call_timeout=0.5)
    hung.reset(seed=0)
    try:
        hung.step(0)
        exc: Exception | None = None
    except Exception as error:
        exc = error
    latencies = []
    with remote_env(CARTPOLE, url=target.url, call_timeout=2.0) as other:
        other.reset(seed=0)
        for _ in range(20):
            started = time.monotonic()
            if any(other.step(np.int64(1))[2:4]):
                other.reset()
            latencies.append(time.monotonic() - started)
    hung.close()
    worst = max(latencies)
    detail = (
        f"hung client: {type(exc).__name__}; other session served 20 steps, "
        f"worst {worst * 1000:.1f} ms while the env slept {delay:g} s"
    )
    ok = isinstance(exc, CallTimeoutError) and worst < 0.5
    return AttackResult("hung env (--threads)", ok, {"worst_step_ms": worst * 1000}, detail)


FAULTS: dict[str, Callable[..., AttackResult]] = {
    "kill -9 mid-run": fault_kill9,
    "SIGSTOP (hung server)": fault_sigstop,
    "SIGTERM (graceful shutdown)": fault_sigterm,
    "client killed mid-episode": fault_client_killed,
    "hung env (--threads)": fault_hung_env,
}
"""Each fault scenario by name (``hung env`` needs a server started with HUNG_ENV_ARGS)."""


def run_fault(name: str, target: Target, **options: Any) -> AttackResult:
    """Run the scenario ``name``; one that breaks off is a failed result, not an exception."""
    try:
        return FAULTS[name](target, **options)
    except Exception as exc:
        return failed(name, exc)
