"""What a validation found: one :class:`CheckResult` per check, gathered in a :class:`Report`.

A check passes, fails, warns (a quality concern, or a contract rule that cannot be decided
without the in-process env) or is skipped (it does not apply to this target). Only failures of
the protocol and contract levels make ``openenv-gym validate`` exit 1.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_UNREACHABLE", "CheckResult", "Report", "Status"]

Status = Literal["pass", "fail", "warn", "skip"]
EXIT_OK, EXIT_FAILED, EXIT_UNREACHABLE = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The outcome of one check.

    Attributes:
        check: the check's id, ``level.name`` (see ``docs/validate.md``).
        status: ``pass``, ``fail``, ``warn`` or ``skip``.
        detail: for a failure, where (side, env index, episode, step) and expected vs actual;
            otherwise what was checked.
        figures: measurements (counts, rates, latencies).

    """

    check: str
    status: Status
    detail: str = ""
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def level(self) -> str:
        """The level the check belongs to (``protocol``, ``contract`` or ``quality``)."""
        return self.check.partition(".")[0]

    def __str__(self) -> str:
        return f"{self.status.upper():4}  {self.check}: {self.detail}".rstrip(": ")


def passed(check: str, detail: str = "", **figures: Any) -> CheckResult:
    """Return a passing result."""
    return CheckResult(check, "pass", detail, figures)


def failed(check: str, detail: str, **figures: Any) -> CheckResult:
    """Return a failing result; ``detail`` says where and expected vs actual."""
    return CheckResult(check, "fail", detail, figures)


def warned(check: str, detail: str, **figures: Any) -> CheckResult:
    """Return a warning: a concern that does not fail the validation."""
    return CheckResult(check, "warn", detail, figures)


def skipped(check: str, why: str) -> CheckResult:
    """Return the result of a check that does not apply to this target."""
    return CheckResult(check, "skip", why)


def from_problems(check: str, problems: list[str], what: str, **figures: Any) -> CheckResult:
    """Fail with the first problems found, else pass with ``what`` as the detail."""
    if not problems:
        return passed(check, what, **figures)
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return failed(check, "; ".join(problems[:3]) + more, **figures)


@dataclasses.dataclass
class Report:
    """A validation run: the target, the results in order, quality figures and plots.

    Attributes:
        target: the TARGET as given.
        env_id: the spec validated on it.
        levels: the levels run.
        results: every check's result, in the order they ran.
        quality: figures of the quality level (rewards, lengths, latencies), if run.
        plots: paths of the PNG plots written.
        unreachable: why the target could not be reached, if it could not.

    """

    target: str
    env_id: str = ""
    levels: tuple[str, ...] = ()
    results: list[CheckResult] = dataclasses.field(default_factory=list)
    quality: dict[str, Any] = dataclasses.field(default_factory=dict)
    plots: list[str] = dataclasses.field(default_factory=list)
    unreachable: str | None = None

    @property
    def failures(self) -> list[CheckResult]:
        """The failed protocol and contract checks (what makes the run exit 1)."""
        return [r for r in self.results if r.status == "fail" and r.level != "quality"]

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, 1 on a protocol or contract failure, 2 if unreachable."""
        if self.unreachable is not None:
            return EXIT_UNREACHABLE
        return EXIT_FAILED if self.failures else EXIT_OK

    def to_json(self) -> dict[str, Any]:
        """Return the report as JSON-ready data."""
        return {
            "target": self.target,
            "env_id": self.env_id,
            "levels": list(self.levels),
            "exit_code": self.exit_code,
            "unreachable": self.unreachable,
            "checks": [
                {
                    "check": r.check,
                    "status": r.status,
                    "detail": r.detail,
                    "figures": _jsonable(r.figures),
                }
                for r in self.results
            ],
            "quality": _jsonable(self.quality),
            "plots": list(self.plots),
        }


def _jsonable(value: Any) -> Any:
    """Turn numpy scalars and containers into plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (TypeError, ValueError):
            return repr(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)
