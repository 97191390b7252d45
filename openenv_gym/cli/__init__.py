"""The ``openenv-gym`` command: one module per command family, each with ``add_commands``.

A new command family is a module in this package with an ``add_commands(commands)`` function
(``commands`` is argparse's subparsers object) whose parsers set ``run=`` to a function taking
the parsed namespace and returning the exit status; list it in ``COMMAND_MODULES``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from openenv_gym.errors import OpenEnvError

__all__ = ["COMMAND_MODULES", "main"]

COMMAND_MODULES = (
    "openenv_gym.cli.serve",
    "openenv_gym.cli.run",
    "openenv_gym.cli.docker",
    "openenv_gym.cli.validate",
    "openenv_gym.cli.status",
    "openenv_gym.cli.ray",
)
"""Modules adding commands, in ``--help`` order."""

DESCRIPTION = "Serve, drive, benchmark and check remote Gymnasium environments."


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openenv-gym", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(commands)
    # Listed for --help; main() hands "bench ..." to the suite's own parser.
    commands.add_parser("bench", help="throughput, latency and wire size side by side")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        from openenv_gym.bench.suite import main as bench_main

        logging.basicConfig(level=logging.WARNING)
        return bench_main(argv[1:])
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose or args.command == "serve" else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        return int(args.run(args))
    except OpenEnvError as exc:  # expected failures get one clear line, not a traceback
        print(f"openenv-gym {args.command}: {exc}", file=sys.stderr)
        return 1
