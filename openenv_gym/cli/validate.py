"""``openenv-gym validate TARGET``: protocol, contract and quality checks of an env or server."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def _levels(text: str) -> tuple[str, ...]:
    """Parse ``--level``: a comma-separated list of known levels."""
    from openenv_gym.testing.validate.runner import LEVELS

    levels = tuple(level.strip() for level in text.split(",") if level.strip())
    unknown = [level for level in levels if level not in LEVELS]
    if unknown or not levels:
        wanted = ", ".join(LEVELS)
        named = ", ".join(unknown) or "(none)"
        raise argparse.ArgumentTypeError(f"unknown level(s) {named}: expected some of {wanted}")
    return levels


def _validate(args: argparse.Namespace) -> int:
    from openenv_gym.testing.validate import validate
    from openenv_gym.testing.validate.output import markdown, write_report

    report = validate(
        args.target,
        levels=args.level,
        episodes=args.episodes,
        env_id=args.env_id,
        token=args.token,
        quiet=args.json or args.no_progress,
    )
    if args.out:
        write_report(report, Path(args.out))
    if args.json:
        data = report.to_json()
        data["quality"].pop("step_seconds", None)
        print(json.dumps(data, indent=2))
    else:
        print(markdown(report), end="")
        for failure in report.failures:
            print(f"FAIL {failure.check}: {failure.detail}", file=sys.stderr)
    return report.exit_code


def add_commands(commands: Any) -> None:
    """Add ``validate`` to the ``openenv-gym`` subcommands."""
    parser = commands.add_parser(
        "validate",
        help="check an env, server or image: protocol, Gymnasium contract, quality",
        description="Exit 0: every check passed; 1: a protocol or contract check failed; "
        "2: the target cannot be reached. See docs/validate.md.",
    )
    parser.add_argument(
        "target",
        help="a hosted spec (CartPole-v1, mypkg.envs:MyEnv), a ws:// or wss:// URL, an "
        "openenv+ws:// URL, or docker:IMAGE",
    )
    parser.add_argument(
        "--level",
        type=_levels,
        default="protocol,contract,quality",
        help="comma-separated levels to run",
    )
    parser.add_argument("--out", help="directory for report.md, report.json and the plots")
    parser.add_argument("--episodes", type=int, default=20, help="episodes per policy (quality)")
    parser.add_argument("--env-id", help="the spec to validate on a server hosting several")
    parser.add_argument(
        "--token", default=os.environ.get("OPENENV_GYM_TOKEN"), help="the server's token"
    )
    parser.add_argument("--json", action="store_true", help="print the JSON report")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=_validate)
