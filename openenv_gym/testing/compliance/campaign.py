"""The campaign: every attack with the server it needs, started locally and torn down.

:data:`ATTACKS` pairs each attack function with the way its target server must be started
(specs, flags, a hosting file, a token, an MCP port). :func:`run_attack` starts that server
with :class:`~openenv_gym.providers.local.LocalProvider`, runs the attack and stops the server;
an attack whose flags this server build lacks is reported "not runnable: flag missing".
Attacks that measure peak memory get a server of their own (``VmHWM`` only ever grows).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from openenv_gym.errors import ImageBuildError, OpenEnvError
from openenv_gym.providers.docker_image import _docker_client
from openenv_gym.providers.local import LocalProvider
from openenv_gym.testing.compliance import attacks as a
from openenv_gym.testing.compliance import harbor, native
from openenv_gym.testing.compliance import openenv_routes as oe
from openenv_gym.testing.compliance import pool_attacks as pool
from openenv_gym.testing.compliance._support import (
    AttackResult,
    Target,
    failed,
    free_port,
    not_runnable,
    wait_listening,
)
from openenv_gym.testing.compliance.terminal import CANARY_PREFIX

__all__ = ["ATTACKS", "Attack", "run_attack", "run_campaign", "serve_flags"]

CARTPOLE = "CartPole-v1"
SLOW = "openenv_gym.testing.envs:SlowEnv"
SLOW_TOOL = "openenv_gym.testing.envs:SlowToolEnv"

_TERMINAL_HOSTING = f"""
[[env]]
spec = "{a.TERMINAL}"
kwargs = {{ allow_outside_container = true }}
"""


@dataclasses.dataclass(frozen=True)
class Attack:
    """One attack and the server it is run against.

    Attributes:
        name: the attack's name (as in its result).
        run: the attack function.
        specs: what the server hosts.
        args: more ``openenv-gym serve`` flags.
        hosting: a hosting file's TOML text, if the server needs one.
        token: the server requires a token.
        mcp: the server serves its first spec as MCP tools on a second port.
        environ_secrets: the server's environment holds the token and a canary variable.
        env_id: what a good client builds on it.
        fresh: the attack needs a server of its own (it measures peak memory); others may share
            one with the attacks next to them in a campaign that need the same server.
        docker: the attack needs a Docker engine on this machine (its envs run in containers);
            without one it is not runnable, rather than failed.
        modules: Python modules the server needs (optional extras, such as an engine's);
            without one of them the attack is not runnable, rather than failed.

    """

    name: str
    run: Callable[[Target], AttackResult]
    specs: tuple[str, ...] = (CARTPOLE,)
    args: tuple[str, ...] = ()
    hosting: str | None = None
    token: bool = False
    mcp: bool = False
    environ_secrets: bool = False
    env_id: str = CARTPOLE
    fresh: bool = False
    docker: bool = False
    modules: tuple[str, ...] = ()

    def server_key(self) -> tuple[Any, ...]:
        """Return what identifies the server this attack needs."""
        return (self.specs, self.args, self.hosting, self.token, self.mcp, self.environ_secrets)

    def flags(self) -> list[str]:
        """Return the server flags this attack needs."""
        flags = [arg for arg in self.args if arg.startswith("--")]
        flags += ["--hosting"] * bool(self.hosting) + ["--mcp-port"] * self.mcp
        return flags + ["--token-fd"] * self.token


_HANDSHAKE = ("--handshake-timeout", "1")
_POOL = (CARTPOLE, pool.HEAVY)
_POOL_ARGS = ("--concurrent-steps", "4")

ATTACKS: tuple[Attack, ...] = (
    Attack("remote_id_runs_no_code", a.attack_remote_id_runs_no_code, args=("--allow-any-id",)),
    Attack("remote_id_dials_no_url", a.attack_remote_id_dials_no_url, args=("--allow-any-id",)),
    Attack(
        "native_engine_named_by_client",
        a.attack_native_engine_named_by_client,
        args=("--allow-any-id",),
    ),
    Attack("safety_kwargs", a.attack_safety_kwargs, specs=(a.TERMINAL,)),
    Attack("set_attr_safety", a.attack_set_attr_safety, specs=(), hosting=_TERMINAL_HOSTING),
    Attack("origin_and_host", a.attack_origin_and_host),
    Attack("observe_origin_and_host", a.attack_observe_origin_and_host),
    Attack("duplicate_authorization", a.attack_duplicate_authorization, token=True),
    Attack("observe_without_token", a.attack_observe_without_token, token=True),
    Attack("observe_huge_request", a.attack_observe_huge_request, token=True),
    Attack("observe_scrape_storm", a.attack_observe_scrape_storm, token=True),
    Attack(
        "mcp_without_token", a.attack_mcp_without_token, specs=(SLOW_TOOL,), token=True, mcp=True
    ),
    Attack(
        "mcp_slow_tool",
        a.attack_mcp_slow_tool,
        specs=(SLOW_TOOL,),
        token=True,
        mcp=True,
        env_id=SLOW_TOOL,
    ),
    Attack("msgpack_maps_before_hello", a.attack_msgpack_maps_before_hello, fresh=True),
    Attack("render_1024_envs", a.attack_render_1024_envs, fresh=True),
    Attack("large_json", a.attack_large_json, fresh=True),
    Attack("deep_json", a.attack_deep_json, fresh=True),
    Attack(
        "unread_requests_threads",
        a.attack_unread_requests_threads,
        specs=(CARTPOLE, SLOW),
        args=("--threads", "--env-kwargs-allow", "delay"),
        fresh=True,
    ),
    Attack("continuation_frames", a.attack_continuation_frames, fresh=True),
    Attack("compression_bombs", a.attack_compression_bombs, fresh=True),
    Attack("half_open_flood", a.attack_half_open_flood, args=_HANDSHAKE, fresh=True),
    Attack(
        "unread_close",
        a.attack_unread_close,
        args=("--idle-timeout", "0.5", "--close-timeout", "1", "--set-attr-allow", "blob"),
    ),
    Attack(
        "failing_constructor_slots",
        a.attack_failing_constructor_slots,
        specs=(CARTPOLE, "openenv_gym.testing.envs:FailingEnv"),
        args=("--max-sessions", "2"),
    ),
    Attack(
        "terminal_server_environ",
        a.attack_terminal_server_environ,
        specs=(),
        hosting=_TERMINAL_HOSTING,
        environ_secrets=True,
    ),
    Attack(
        "terminal_other_workdir",
        a.attack_terminal_other_workdir,
        specs=(),
        hosting=_TERMINAL_HOSTING,
        environ_secrets=True,
    ),
    Attack(
        "terminal_setsid_escape",
        a.attack_terminal_setsid_escape,
        specs=(),
        hosting=_TERMINAL_HOSTING,
        environ_secrets=True,
    ),
    Attack("make_bogus_kwarg", a.attack_make_bogus_kwarg),
    Attack("async_vector_remote_error", a.attack_async_vector_remote_error),
    Attack("harbor_paths", harbor.attack_harbor_paths, specs=(harbor.HARBOR_SPEC,), docker=True),
    Attack(
        "harbor_command_flood",
        harbor.attack_harbor_command_flood,
        specs=(harbor.HARBOR_SPEC,),
        docker=True,
    ),
    Attack(
        "native_engine_requests",
        native.attack_native_engine_requests,
        specs=native.NATIVE_SPECS,
        modules=("envpool", "ale_py"),
    ),
    # OpenEnv 0.10's routes on our port (POST /mcp, /openapi.json, /ws?session_id=).
    Attack("openenv_mcp_without_token", oe.attack_openenv_mcp_without_token, token=True),
    Attack(
        "openenv_mcp_session_flood",
        oe.attack_openenv_mcp_session_flood,
        args=("--max-sessions", "2"),
        fresh=True,
    ),
    Attack("openenv_mcp_bodies", oe.attack_openenv_mcp_bodies, args=_HANDSHAKE),
    Attack("openenv_attach_foreign_session", oe.attack_openenv_attach_foreign_session),
    # Pool sessions (issue 15): POOL_SEND/POOL_RESET, their timeouts, the operator's knobs.
    Attack("pool_million_env_ids", pool.attack_pool_million_env_ids, specs=_POOL, args=_POOL_ARGS),
    Attack("pool_bad_timeouts", pool.attack_pool_bad_timeouts, specs=_POOL, args=_POOL_ARGS),
    Attack(
        "pool_unread_sends",
        pool.attack_pool_unread_sends,
        specs=_POOL,
        args=_POOL_ARGS,
        fresh=True,
    ),
    Attack("pool_operator_knobs", pool.attack_pool_operator_knobs, specs=_POOL, args=_POOL_ARGS),
)
"""Every attack of the campaign, in the order of the security issue's holes."""


@functools.cache
def serve_flags() -> frozenset[str]:
    """Return the flags ``openenv-gym serve`` accepts in this installation."""
    done = subprocess.run(
        [sys.executable, "-m", "openenv_gym", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return frozenset(word.strip("[],") for word in done.stdout.split() if word.startswith("--"))


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for as long as the block runs (a server inherits them)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _server(attack: Attack) -> Iterator[Target]:
    """Start the server ``attack`` needs; yield it as a :class:`Target`."""
    args, secrets, token = list(attack.args), {}, None
    mcp_port = free_port() if attack.mcp else None
    if mcp_port is not None:
        args += ["--mcp-port", str(mcp_port)]
    if attack.token or attack.environ_secrets:
        token = "compliance-" + os.urandom(12).hex()
    if attack.environ_secrets:
        assert token is not None
        secrets = {
            "OPENENV_GYM_TOKEN": token,
            "OPENENV_GYM_COMPLIANCE_CANARY": CANARY_PREFIX + os.urandom(8).hex(),
        }
    with contextlib.ExitStack() as stack:
        if attack.hosting is not None:
            hosting = stack.enter_context(
                tempfile.NamedTemporaryFile("w", suffix=".toml", prefix="openenv-hosting-")
            )
            hosting.write(attack.hosting)
            hosting.flush()
            args += ["--hosting", hosting.name]
        with _environ(secrets):
            provider = stack.enter_context(
                LocalProvider(
                    list(attack.specs),
                    extra_args=args,
                    token=token if attack.token else None,
                    startup_timeout=60,
                )
            )
        if mcp_port is not None:
            wait_listening(mcp_port, 20)
        yield Target(
            url=provider.urls[0],
            pid=provider.pids[0],
            token=token,
            mcp_url=None if mcp_port is None else f"http://127.0.0.1:{mcp_port}/mcp",
            env_id=attack.env_id,
        )


def _runnable(attack: Attack) -> AttackResult | None:
    missing = [flag for flag in attack.flags() if flag not in serve_flags()]
    if missing:
        return not_runnable(attack.name, f"flag missing: {' '.join(missing)}")
    absent = [module for module in attack.modules if importlib.util.find_spec(module) is None]
    if absent:
        return not_runnable(attack.name, f"needs the modules {', '.join(absent)}")
    if attack.docker:
        try:
            _docker_client().close()
        except ImageBuildError as exc:  # no SDK, or no engine answers
            return not_runnable(attack.name, f"needs a Docker engine: {exc}")
    return None


def _timed(attack: Attack, target: Target) -> AttackResult:
    started = time.monotonic()
    try:
        outcome = attack.run(dataclasses.replace(target, env_id=attack.env_id))
    except Exception as exc:  # an attack that breaks off is a failed result, not a crash
        outcome = failed(attack.name, exc)
    figures: dict[str, Any] = dict(outcome.figures)
    figures["attack_seconds"] = time.monotonic() - started
    return dataclasses.replace(outcome, figures=figures)


def run_attack(attack: Attack) -> AttackResult:
    """Start the server ``attack`` needs, run the attack on it, and stop the server.

    Returns:
        The attack's result; a failed one (not an exception) if the server does not start or
        the attack breaks off, and a not-runnable one if a flag it needs is missing.

    """
    return run_campaign([attack])[0]


def _groups(attacks: Sequence[Attack]) -> list[list[Attack]]:
    """Group ``attacks`` by the server they need (a fresh one each for ``fresh`` attacks)."""
    groups: dict[Any, list[Attack]] = {}
    for index, attack in enumerate(attacks):
        groups.setdefault(index if attack.fresh else attack.server_key(), []).append(attack)
    return list(groups.values())


def run_campaign(
    attacks: Sequence[Attack] = ATTACKS, *, on_result: Callable[[AttackResult], None] | None = None
) -> list[AttackResult]:
    """Run ``attacks`` one at a time; those that need the same server share one.

    Args:
        attacks: what to run.
        on_result: called with each result as soon as it is known.

    Returns:
        One result per attack, in the order of ``attacks`` (never raises for what a server
        does, nor for an attack that breaks off).

    """
    results: list[AttackResult] = []

    def record(outcome: AttackResult) -> None:
        results.append(outcome)
        if on_result is not None:
            on_result(outcome)

    for group in _groups(attacks):
        runnable = []
        for attack in group:
            refusal = _runnable(attack)
            if refusal is not None:
                record(refusal)
            else:
                runnable.append(attack)
        if not runnable:
            continue
        done = 0
        try:
            with _server(runnable[0]) as target:
                for attack in runnable:
                    record(_timed(attack, target))
                    done += 1
        except (OpenEnvError, OSError, TimeoutError) as exc:
            for attack in runnable[done:]:
                record(failed(attack.name, exc))
    rank = {name: index for index, name in enumerate(attack.name for attack in attacks)}
    return sorted(results, key=lambda outcome: rank[outcome.name])
