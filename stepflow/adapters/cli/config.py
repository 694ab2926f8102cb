"""`stepflow config`: the settings a command would run with, and where each one came from.

    stepflow config [--json] [--store URL --amqp-url URL ... any settings flag]

Settings come from flags, `STEPFLOW_*` variables and defaults, in that order; when a process
does not do what its operator expected, this is the first question. Passwords in URLs and
the HTTP tokens are masked. `--json` prints one object, setting name -> value.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

import msgspec

from stepflow.adapters.cli import EXIT_OK, EXIT_USAGE, common
from stepflow.adapters.cli.errors import say
from stepflow.adapters.cli.options import add_settings, flags_of
from stepflow.settings import SPECS, SettingsError, resolve


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = common(sub.add_parser("config", help="print the effective settings (flags, $STEPFLOW_*, defaults)",
                                   description=(
                                       "Print the settings a command would run with and where each came from "
                                       "(flag, environment variable, default), among them `home`, the data "
                                       "directory that holds the default store. Passwords and tokens are masked.")))
    taken = {"store", "log_format", "log_level"}
    add_settings(parser, *(spec.name for spec in SPECS if spec.flag is not None and spec.name not in taken))
    parser.add_argument("--json", action="store_true", help="one JSON object, setting name -> value")
    parser.set_defaults(func=config_command)


def config_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        settings, sources = resolve(flags_of(args))
    except SettingsError as error:  # main() read them already; kept for direct callers
        say(str(error))
        return EXIT_USAGE
    shown = settings.redacted()
    if args.json:
        out.write(msgspec.json.encode(shown).decode() + "\n")
        return EXIT_OK
    header = ("setting", "value", "from", "variable", "flag")
    rows = [header, *((spec.name, _text(getattr(shown, spec.name)), sources[spec.name], ",".join(spec.variables),
                       spec.flag or "-") for spec in SPECS)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n")
    return EXIT_OK


def _text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple):
        return ", ".join(value) or "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value) if value != "" else "-"
