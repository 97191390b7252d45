"""One validation run: open the target, run the levels with a progress bar, build the report."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Any

from openenv_gym.testing.validate.contract import (
    check_env_warnings,
    contract_actions,
    episode_checks,
    record_side,
)
from openenv_gym.testing.validate.results import CheckResult, Report, failed
from openenv_gym.testing.validate.target import OpenedTarget, Unreachable, open_target

__all__ = ["LEVELS", "validate"]

LEVELS = ("protocol", "contract", "quality")
CONTRACT_EPISODES = 3
_CONTRACT_UNITS = 8  # rollouts, check_env, state, render, three vector modes, diffs


class _Progress:
    """A tqdm bar on stderr (or nothing when ``quiet``); ``advance`` moves it one unit."""

    def __init__(self, total: int, *, quiet: bool) -> None:
        self.bar: Any = None
        if not quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="check", file=sys.stderr, leave=False)

    def advance(self, what: str = "") -> None:
        if self.bar is not None:
            if what:
                self.bar.set_description(what)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _contract(target: OpenedTarget, advance: Callable[[str], None]) -> list[CheckResult]:
    from openenv_gym.testing.validate.surface import (
        check_render_modes,
        check_state,
        vector_checks,
    )

    remote_env = target.remote()
    local_env = target.local() if target.local is not None else None
    try:
        limit = remote_env.spec.max_episode_steps if remote_env.spec is not None else None
        if local_env is not None and local_env.spec is not None:
            limit = max(limit or 0, local_env.spec.max_episode_steps or 0) or None
        source = local_env if local_env is not None else remote_env
        actions = contract_actions(source.action_space, limit)
        advance("contract: rollouts")
        remote = record_side("remote", remote_env, CONTRACT_EPISODES, actions, make=target.remote)
        local = (
            None
            if local_env is None
            else record_side("in-process", local_env, CONTRACT_EPISODES, actions, make=target.local)
        )
    finally:
        remote_env.close()
        if local_env is not None:
            local_env.close()
    results = episode_checks(remote, local)
    advance("contract: check_env")
    results.append(
        _guarded("contract.check_env", lambda: check_env_warnings(target.remote, target.local))
    )
    advance("contract: state")
    results.append(_guarded("contract.state", lambda: check_state(target)))
    advance("contract: render modes")
    declared = remote.nondeterministic or (local is not None and local.nondeterministic)
    results.append(
        _guarded("contract.render_modes", lambda: check_render_modes(target, compare=not declared))
    )
    advance("contract: vector")
    results.extend(vector_checks(target))
    if declared:
        results = [_declared_nondeterministic(result) for result in results]
    return results


_DIFFS = ("contract.matches_in_process", "contract.vector_")


def _declared_nondeterministic(result: CheckResult) -> CheckResult:
    """Turn a failed diff into a warning: the spec says two runs need not agree."""
    if result.status != "fail" or not result.check.startswith(_DIFFS):
        return result
    return dataclasses.replace(
        result, status="warn", detail=result.detail + " (the spec says nondeterministic)"
    )


def _guarded(name: str, run: Callable[[], CheckResult]) -> CheckResult:
    try:
        return run()
    except Exception as exc:  # a check that breaks off on the target's behaviour: a failure
        return failed(name, f"{type(exc).__name__}: {exc}"[:300])


def validate(
    target: str,
    *,
    levels: Sequence[str] = LEVELS,
    episodes: int = 20,
    env_id: str | None = None,
    token: str | None = None,
    quiet: bool = False,
    on_result: Callable[[CheckResult], None] | None = None,
) -> Report:
    """Validate ``target`` at ``levels``; never raises for what the target does.

    Args:
        target: a hosted spec, a ``ws(s)://`` or ``openenv+ws(s)://`` URL, or ``docker:IMAGE``.
        levels: any of ``protocol``, ``contract``, ``quality`` (run in the order contract,
            quality, protocol: the protocol level may break a weak server).
        episodes: episodes per policy at the quality level.
        env_id: the spec to validate on a server hosting several.
        token: the token the server requires.
        quiet: no progress bar.
        on_result: called with each result as it is known.

    Returns:
        The report (``exit_code`` 0, 1 or 2).

    Raises:
        ValueError: an unknown level.

    """
    unknown = sorted(set(levels) - set(LEVELS))
    if unknown:
        raise ValueError(
            f"unknown level(s) {', '.join(unknown)}; expected some of {', '.join(LEVELS)}"
        )
    ordered = tuple(level for level in ("contract", "quality", "protocol") if level in levels)
    report = Report(target, levels=ordered)
    total = (
        1
        + _CONTRACT_UNITS * ("contract" in ordered)
        + episodes * 2 * ("quality" in ordered)
        + 7 * ("protocol" in ordered)
    )
    progress = _Progress(total, quiet=quiet)

    def add(results: list[CheckResult]) -> None:
        for result in results:
            report.results.append(result)
            if on_result is not None:
                on_result(result)

    try:
        progress.advance(f"opening {target}")
        with open_target(target, env_id=env_id, token=token) as opened:
            report.env_id = opened.env_id
            if "contract" in ordered:
                add(_contract_guarded(opened, progress.advance))
            if "quality" in ordered:
                from openenv_gym.testing.validate.quality import quality_checks

                results, figures = quality_checks(
                    opened, episodes=episodes, advance=lambda: progress.advance("quality")
                )
                report.quality = figures
                add(results)
            if "protocol" in ordered:
                from openenv_gym.testing.validate.protocol import protocol_checks

                add(protocol_checks(opened, advance=lambda: progress.advance("protocol")))
    except Unreachable as exc:
        report.unreachable = str(exc)
    finally:
        progress.close()
    return report


def _contract_guarded(target: OpenedTarget, advance: Callable[[str], None]) -> list[CheckResult]:
    try:
        return _contract(target, advance)
    except Exception as exc:  # e.g. the first session cannot even be opened
        return [failed("contract.session", f"{type(exc).__name__}: {exc}"[:300])]
