"""The `stepflow` command line: one sub-command module per job, each with `register()`.

Exit codes (the same for every command):
  0  success (for `run`: the workflow completed)
  1  the workflow ended in error, was stopped or deleted
  2  bad usage or input (a definition or parameter refused, an unknown id); nothing stored
  3  a refused command (e.g. retry of a completed job); nothing stored
  4  infrastructure unreachable (broker, store)

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

from stepflow.adapters.cli.options import add_settings, settings_of
from stepflow.adapters.logging import configure
from stepflow.settings import Settings, SettingsError, load_settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2, 3, 4

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stepflow", description="Event-sourced workflow engine on RabbitMQ.")
    parser.add_argument("--version", action=_VersionAction,
                        help="print the version (and those of eventsourcing, aio-pika, msgspec) and exit")
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
    try:
        args.settings = settings_of(args)
    except SettingsError as error:
        print(f"stepflow: {error}", file=sys.stderr)
        return EXIT_USAGE
    # One-shot commands log warnings unless --log-level says otherwise; the long-running ones
    # (serve, worker) reconfigure with the settings' level (STEPFLOW_LOG_LEVEL, default info).
    configure(args.settings.log_format, getattr(args, "log_level", None) or "warning")
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        code = 130
    return code


def entry() -> None:
    sys.exit(main())
