"""The `stepflow` command line: one sub-command module per job, each with `register()`.

Exit codes (the same for every command):
  0  success (for `run`: the workflow completed)
  1  the workflow ended in error, was stopped or deleted
  2  bad usage or input (a definition or parameter refused, an unknown id); nothing stored
  3  a refused command (e.g. retry of a completed job); nothing stored
  4  infrastructure unreachable (broker, store)
"""

from __future__ import annotations

import argparse
import getpass
import importlib
import os
import sys
from collections.abc import Sequence

from stepflow.adapters.logging import configure

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2, 3, 4

# Each module defines `register(subparsers)`; its parsers set `func(args) -> int`.
COMMAND_MODULES = ("run", "serve", "worker", "inspect", "control")


def default_actor() -> str:
    try:
        return os.environ.get("STEPFLOW_ACTOR") or getpass.getuser()
    except Exception:  # no user name in some containers
        return "unknown"


def common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options every command takes."""
    parser.add_argument("--store", default=None,
                        help="event store URL (default $STEPFLOW_STORE or sqlite:///stepflow.sqlite)")
    parser.add_argument("--log-format", choices=("console", "json"), default=None)
    parser.add_argument("--log-level", default=None)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stepflow", description="Event-sourced workflow engine on RabbitMQ.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"stepflow.adapters.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"stepflow.adapters.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure(getattr(args, "log_format", None), getattr(args, "log_level", None) or "warning")
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        code = 130
    return code


def entry() -> None:
    sys.exit(main())
