"""What every command reading the store shares: the session, and errors as exit codes.

A `Session` opens the engine and the views beside it and, unless told not to, brings the
views up to date first, so a read command shows what is stored now even when no backend or
`stepflow project` keeps them current. It never creates a store (`open_existing`): a read in
another directory, or with a mistyped path, used to leave a new empty SQLite file behind and
print an empty table. `guarded` is where a Python exception becomes an exit code for callers
that do not go through `main` (2 for bad usage such as an unknown or ambiguous id, 4 when the
store is unreachable; see `errors`). `control` uses both too.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections.abc import Callable
from uuid import UUID

from stepflow.adapters.cli import common
from stepflow.adapters.cli.errors import UsageError, report
from stepflow.adapters.cli.formatting import ProgressBar
from stepflow.adapters.persistence import make_store_dir, open_engine, sqlite_path, store_url
from stepflow.engine.application import WorkflowEngine
from stepflow.projections import ProjectionRunner, queries
from stepflow.projections.store import ViewStore

__all__ = ["JSON_HELP", "Session", "UsageError", "guarded", "open_existing", "read_command", "sentence", "store_of"]

Command = Callable[[argparse.Namespace], int]
JSON_HELP = "machine-readable output: one JSON object per line"


def guarded(func: Command) -> Command:
    """Map usage errors to exit 2 and an unreachable store to exit 4, message on stderr."""

    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except Exception as error:
            code = report(error, store_of(args))
            if code is None:
                raise
            return code

    return wrapper


def store_of(args: argparse.Namespace) -> str:
    """The store URL a parsed command line names (its settings: --store, $STEPFLOW_STORE, default)."""
    settings = getattr(args, "settings", None)
    return settings.store if settings is not None else store_url(getattr(args, "store", None))


def open_existing(store: str) -> WorkflowEngine:
    """The store of a command that reads or amends what is there; a SQLite file that does not
    exist is bad input (exit 2) and is not created."""
    path = sqlite_path(store)
    if path is not None and not path.exists():
        raise UsageError(f"no store at {path}: start a workflow first, or pass --store")
    return open_engine(store)


def read_command(sub: argparse._SubParsersAction, name: str, help: str, func: Command,  # type: ignore[type-arg]
                 views: bool = True, description: str | None = None) -> argparse.ArgumentParser:
    """A read command's parser: the common options, `--json` and, if it reads the views,
    `--no-catch-up`. `description` (for `--help`) defaults to `help` (the commands list)."""
    parser = common(sub.add_parser(name, help=help, description=description or sentence(help)))
    parser.add_argument("--json", action="store_true", help=JSON_HELP)
    if views:
        parser.add_argument("--no-catch-up", action="store_true",
                            help="read the views as they are, without applying new events first")
    parser.set_defaults(func=guarded(func))
    return parser


def sentence(text: str) -> str:
    """A command's one-line help as the first sentence of its `--help` description."""
    return text[:1].upper() + text[1:] + "."


class Session:
    """An engine and the views beside it, for one command."""

    def __init__(self, args: argparse.Namespace, catch_up: bool = True, *, writes: bool = False) -> None:
        """`writes`: the command records something even in a new store (a worker order is no
        reading of what is there), so a missing SQLite file is created, as `run` does."""
        store = store_of(args)
        if writes:
            make_store_dir(store)
            self.engine = open_engine(store)
        else:
            self.engine = open_existing(store)
        try:
            self.runner = ProjectionRunner(self.engine)
        except BaseException:
            self.engine.close()
            raise
        self.store: ViewStore = self.runner.store
        if catch_up and not getattr(args, "no_catch_up", False):
            try:
                self._catch_up()
            except BaseException:
                self.close()
                raise

    def _catch_up(self) -> None:
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
