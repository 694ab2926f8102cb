"""The `stepflow` command line: one sub-command module per job, each with `register()`.

Exit codes (the same for every command):
  0    success (for `run`: the workflow completed)
  1    the workflow ended in error, was stopped or deleted (`run`: also its --timeout)
  2    bad usage or input (a flag, URL, definition or parameter refused, an unknown id, no
       store where a read command looks); nothing stored
  3    a refused command (e.g. retry of a completed job); nothing stored
  4    infrastructure unreachable or missing (broker, store server, its database or schema,
       the HTTP port of `serve --http` taken)
  130  interrupted (Ctrl-C)
Every error is one line on stderr starting with `stepflow: ` (`stepflow.adapters.cli.errors`);
a traceback means a bug in stepflow. Output cut short by a closed pipe (`| head`) is exit 0.

Settings (store, broker, batch sizes, HTTP, ...) are flags of the commands that take them and
`STEPFLOW_*` variables (`stepflow.settings`); `main` reads them once into `args.settings`, and
a bad value is exit 2 for every command. `stepflow config` prints them.
"""

from __future__ import annotations

import argparse
import getpass
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from stepflow.adapters.cli.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    drop_stdout,
    report,
    say,
)
from stepflow.adapters.cli.options import add_settings, settings_of
from stepflow.adapters.logging import configure
from stepflow.settings import Settings, SettingsError, load_settings

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_REFUSED", "EXIT_UNREACHABLE", "EXIT_USAGE",
           "build_parser", "common", "default_actor", "entry", "main"]

# Each module defines `register(subparsers)`; its parsers set `func(args) -> int`.
COMMAND_MODULES = ("run", "serve", "worker", "reads", "history", "projections", "control", "config",
                   "workers_control", "stats")


def default_actor(settings: Settings | None = None) -> str:
    """Who issues a command: the `actor` setting (`--actor`, `STEPFLOW_ACTOR`), else the OS user."""
    actor = (settings if settings is not None else load_settings()).actor
    try:
        return actor or getpass.getuser()
    except Exception:  # noqa: BLE001  no user name in some containers
        return "unknown"


def common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options every command takes."""
    return add_settings(parser, "store", "log_format", "log_level")


def version_text() -> str:
    """`stepflow --version`: this package's version and those of the libraries it stands on."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import stepflow

    def of(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    libraries = ", ".join(f"{name} {of(name)}" for name in ("eventsourcing", "aio-pika", "msgspec"))
    return (f"stepflow {stepflow.__version__} ({stepflow.DISTRIBUTION}; {libraries}; "
            f"Python {platform.python_version()})")


class _VersionAction(argparse.Action):
    """Like argparse's "version", but the text is only computed when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        print(version_text())
        parser.exit(EXIT_OK)


class Parser(argparse.ArgumentParser):
    """argparse's parser, but a usage error is one `stepflow:` line like every other error
    (with where to read more), not the usage block and then "stepflow run: error: ..."."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("stepflow").strip()
        say(f"{command + ': ' if command else ''}{message} (see `{self.prog} --help`)")
        self.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every command module's parsers under one `stepflow`."""
    parser = Parser(prog="stepflow", description="Event-sourced workflow engine on RabbitMQ.",
                    epilog="Exit codes: 0 ok, 1 workflow failed or stopped, 2 bad input, 3 refused, "
                           "4 infrastructure unreachable, 130 interrupted. `stepflow COMMAND --help` "
                           "describes each command.")
    parser.add_argument("--version", action=_VersionAction,
                        help="print the version (and those of eventsourcing, aio-pika, msgspec) and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
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
    """Run one command; its exit code. Known failures are one line on stderr (see `errors`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.settings = settings_of(args)
    except SettingsError as error:
        say(str(error))
        return EXIT_USAGE
    # One-shot commands log warnings unless --log-level says otherwise; the long-running ones
    # (serve, worker) reconfigure with the settings' level (STEPFLOW_LOG_LEVEL, default info).
    configure(args.settings.log_format, getattr(args, "log_level", None) or "warning")
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        say("interrupted")
        code = EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`| head -1`): it has what it wanted
        drop_stdout()
        code = EXIT_OK
    except Exception as error:
        known = report(error, args.settings.store)
        if known is None:
            raise
        code = known
    return code


def entry() -> None:
    """The `stepflow` command: `main`, where a closed stdout at the very end is no error either
    (the output of `--help` or a short table is only written when the process ends)."""
    code: int | str | None
    try:
        code = main()
    except BrokenPipeError:
        drop_stdout()
        code = EXIT_OK
    except SystemExit as done:  # argparse: --help, --version, a usage error
        code = done.code
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        drop_stdout()
    sys.exit(code)
