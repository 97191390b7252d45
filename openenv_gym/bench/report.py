"""The reliability report's figures by section and the invariants checked on them."""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

__all__ = ["KNOWN_BUGS", "Check", "Report"]

KNOWN_BUGS: dict[str, str] = {}
"""Invariant name -> a known library bug breaking it (none now: the --threads disconnect race
this campaign found is fixed; the connection closes a session after its running request)."""


@dataclasses.dataclass
class Check:
    """One invariant: whether it held, and the known bug that breaks it, if any."""

    name: str
    ok: bool
    detail: str
    known_bug: str | None

    @property
    def verdict(self) -> str:
        """``ok``, ``FAIL``, or for a known bug ``XFAIL`` (still broken) / ``XPASS``."""
        if self.ok:
            return "ok" if self.known_bug is None else "XPASS"
        return "XFAIL" if self.known_bug is not None else "FAIL"


class Report:
    """Figures by section, and the invariants checked on them."""

    def __init__(self) -> None:
        self.figures: dict[str, dict[str, Any]] = collections.defaultdict(dict)
        self.checks: list[Check] = []

    def put(self, section: str, **figures: Any) -> None:
        """Record figures under ``section``."""
        self.figures[section].update(figures)

    def check(self, name: str, ok: bool, detail: str = "", known_bug: str | None = None) -> bool:
        """Record an invariant; return whether it held."""
        known_bug = known_bug or KNOWN_BUGS.get(name)
        self.checks.append(Check(name, bool(ok), detail, known_bug))
        return bool(ok)

    @property
    def failed(self) -> list[Check]:
        """The invariants that failed (known bugs excluded)."""
        return [check for check in self.checks if check.verdict == "FAIL"]

    def print(self) -> None:
        """Print the figures and invariants as a table."""
        print("\n" + "=" * 78)
        print("reliability report")
        print("=" * 78)
        for section, figures in self.figures.items():
            print(f"\n[{section}]")
            for key, value in figures.items():
                if isinstance(value, float):
                    value = f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
                elif isinstance(value, int) and not isinstance(value, bool):
                    value = f"{value:,}"
                elif isinstance(value, dict):
                    value = ", ".join(f"{k}: {v}" for k, v in value.items()) or "-"
                print(f"  {key:<38} {value}")
        print("\n[invariants]")
        for check in self.checks:
            line = f"  {check.verdict:<6} {check.name}"
            if check.detail and check.verdict != "ok":
                line += f"  ({check.detail})"
            print(line)
            if check.known_bug and check.verdict == "XFAIL":
                print(f"         known bug: {check.known_bug}")
        verdicts = collections.Counter(check.verdict for check in self.checks)
        summary = ", ".join(f"{verdicts[v]} {v}" for v in ("ok", "XFAIL", "XPASS", "FAIL"))
        print(f"\n{len(self.checks)} invariants: {summary}")
        if verdicts["XFAIL"] or verdicts["XPASS"]:
            print("(XFAIL: broken by a known bug, see KNOWN_BUGS; XPASS: not reproduced this run)")

    def to_json(self) -> dict[str, Any]:
        """Return the report as JSON-ready data."""
        return {
            "figures": self.figures,
            "invariants": [
                {**dataclasses.asdict(check), "verdict": check.verdict} for check in self.checks
            ],
            "ok": not self.failed,
        }
