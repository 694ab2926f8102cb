"""What every command reading the store shares: the session, and errors as exit codes.

A `Session` opens the engine and the views beside it and, unless told not to, brings the
views up to date first, so a read command shows what is stored now even when no backend or
`stepflow project` keeps them current. `guarded` is where a Python exception becomes an
exit code: 2 for bad usage (an unknown or ambiguous id), 4 when the store is unreachable.
`control` uses both too.
"""

from __future__ import annotations

import argparse
import functools
import re
import sqlite3
import sys
from collections.abc import Callable
from uuid import UUID

from eventsourcing.persistence import PersistenceError

from stepflow.adapters.cli import EXIT_UNREACHABLE, EXIT_USAGE, common
from stepflow.adapters.cli.formatting import ProgressBar
from stepflow.adapters.persistence import open_engine
from stepflow.projections import ProjectionRunner, queries
from stepflow.projections.store import ViewStore

Command = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """Bad input from the user: exit 2 with the message."""


def guarded(func: Command) -> Command:
    """Map usage errors to exit 2 and an unreachable store to exit 4, message on stderr."""

    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except UsageError as error:
            print(f"stepflow: {error}", file=sys.stderr)
            return EXIT_USAGE
        except (PersistenceError, ConnectionError) as error:
            print(f"stepflow: store unreachable: {error}", file=sys.stderr)
            return EXIT_UNREACHABLE
        except Exception as error:
            if _unreachable(error):
                print(f"stepflow: store unreachable: {error}", file=sys.stderr)
                return EXIT_UNREACHABLE
            raise

    return wrapper


def _unreachable(error: Exception) -> bool:
    if isinstance(error, sqlite3.OperationalError):
        text = str(error)
        return any(s in text for s in ("unable to open", "locked", "disk I/O", "readonly"))
    return type(error).__module__.startswith("psycopg") and type(error).__name__ in (
        "OperationalError", "InterfaceError", "PoolTimeout", "ConnectionTimeout")


def read_command(sub: argparse._SubParsersAction, name: str, help: str, func: Command,  # type: ignore[type-arg]
                 views: bool = True) -> argparse.ArgumentParser:
    """A read command's parser: the common options, `--json` and, if it reads the views,
    `--no-catch-up`."""
    parser = common(sub.add_parser(name, help=help, description=help))
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    if views:
        parser.add_argument("--no-catch-up", action="store_true",
                            help="read the views as they are, without applying new events first")
    parser.set_defaults(func=guarded(func))
    return parser


class Session:
    """An engine and the views beside it, for one command."""

    def __init__(self, args: argparse.Namespace, catch_up: bool = True) -> None:
        self.engine = open_engine(args.store)
        self.runner = ProjectionRunner(self.engine)
        self.store: ViewStore = self.runner.store
        if catch_up and not getattr(args, "no_catch_up", False):
            start = min(self.runner.positions().values(), default=0)
            behind = self.engine.max_notification_id() - start
            bar = ProgressBar("catching up", start=start) if behind > 50_000 and sys.stderr.isatty() else None
            self.runner.run_once(on_progress=bar)
            if bar:
                bar.close()

    def close(self) -> None:
        self.runner.close()
        self.engine.close()

    def __enter__(self) -> Session:  # noqa: PYI034 (final in practice)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def workflow_id(self, text: str) -> UUID:
        """A full id, or a unique prefix of one known to the workflow view."""
        try:
            return UUID(text)
        except ValueError:
            pass
        if len(text) < 4 or not re.fullmatch(r"[0-9a-fA-F-]+", text):
            raise UsageError(f"not a workflow id: {text!r}")
        found = queries.find_workflow_ids(self.store, text)
        if not found and self.runner.run_once():  # the views may lag: catch up and look again
            found = queries.find_workflow_ids(self.store, text)
        if not found:
            raise UsageError(f"unknown workflow {text!r}")
        if len(found) > 1:
            raise UsageError(f"ambiguous workflow id {text!r}: {', '.join(found[:5])}")
        return UUID(found[0])

    def job_id(self, text: str) -> str:
        """A full job id, or a unique prefix of one known to the job view."""
        if len(text) < 4 or not re.fullmatch(r"[0-9a-fA-F-]+", text):
            raise UsageError(f"not a job id: {text!r}")
        found = queries.find_job_ids(self.store, text)
        if not found and self.runner.run_once():
            found = queries.find_job_ids(self.store, text)
        if text in found:
            return text
        if not found:
            raise UsageError(f"unknown job {text!r}")
        if len(found) > 1:
            raise UsageError(f"ambiguous job id {text!r}: {', '.join(found[:5])}")
        return found[0]

    def exists(self, workflow_id: UUID) -> bool:
        return bool(self.engine.recorder.select_events(workflow_id, limit=1))
