"""Persistence settings: a store URL becomes the environment `eventsourcing` is configured by.

    sqlite:///file.sqlite, sqlite:////abs/file.sqlite   (default: stepflow.sqlite in the data
                                    directory, see `stepflow.settings.data_dir`)
    postgresql://user:password@host:port/dbname?schema=NAME
    memory://                       (plain Python objects, for tests and throwaway runs)

This is the only place that knows connection strings. A password is read from the URL or
from `POSTGRES_PASSWORD`, and never logged: `describe()` gives a safe form for logs. It is
also where a driver's failure becomes words for an operator (`store_failure`): psycopg and
sqlite3 say "connection failed" or "unable to open database file" in their own ways, and a
command should say which store, what is wrong with it, and never show a password.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, overload
from urllib.parse import parse_qs, unquote, urlparse

import structlog
from eventsourcing.persistence import PersistenceError
from eventsourcing.sqlite import SQLiteFactory

from stepflow.adapters.sqlite_checkpoints import SAFETY_NET_PAGES, WalCheckpointer
from stepflow.engine.application import WorkflowEngine
from stepflow.settings import load_settings, redact_text, redact_url

log = structlog.get_logger("stepflow.persistence")
T = TypeVar("T")

STORE_FORMS = "sqlite:///FILE, postgresql://USER@HOST:PORT/DB?schema=NAME or memory://"


class StoreURLError(ValueError):
    """A store URL stepflow cannot use, whatever the server: bad input, refused before any I/O."""


class StoreUnavailable(Exception):
    """The store named by a good URL cannot be used now (no server, no database, no schema,
    a file that cannot be opened); the message is one line, fit for an operator, no password."""


def store_url(explicit: str | None = None) -> str:
    """`explicit`, else the store of the settings (`STEPFLOW_STORE` or the default)."""
    return explicit or load_settings().store


def engine_env(url: str) -> dict[str, str]:
    """The `eventsourcing` environment for a store URL; `StoreURLError` if it is not one."""
    parsed = urlparse(url)
    if parsed.scheme == "memory":
        return {"PERSISTENCE_MODULE": "eventsourcing.popo"}
    if parsed.scheme == "sqlite":
        # As in SQLAlchemy: sqlite:///relative.sqlite, sqlite:////absolute.sqlite
        path = unquote(url.split("://", 1)[1].removeprefix("/").split("?", 1)[0])
        env = {
            "PERSISTENCE_MODULE": SQLITE_MODULE,
            "SQLITE_DBNAME": path or "stepflow.sqlite",
            "SQLITE_LOCK_TIMEOUT": "10",
        }
        synchronous = parse_qs(parsed.query).get("synchronous", [""])[0].lower()
        if synchronous:
            if synchronous not in SQLITE_SYNCHRONOUS:
                raise StoreURLError(f"synchronous={synchronous[:20]!r} in the store URL is not one of "
                                    f"{', '.join(SQLITE_SYNCHRONOUS)}")
            env["SQLITE_SYNCHRONOUS"] = synchronous
        return env
    if parsed.scheme in ("postgres", "postgresql"):
        query = parse_qs(parsed.query)
        try:
            port = parsed.port or 5432
        except ValueError:
            raise StoreURLError(f"not a port number in the store URL ({STORE_FORMS})") from None
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": parsed.path.lstrip("/") or "stepflow",
            "POSTGRES_HOST": parsed.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(port),
            "POSTGRES_USER": unquote(parsed.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(parsed.password or os.environ.get("POSTGRES_PASSWORD", "")),
            "POSTGRES_POOL_SIZE": "5",
            "POSTGRES_MAX_OVERFLOW": "10",
        }
        if "schema" in query:
            env["POSTGRES_SCHEMA"] = query["schema"][0]
        return env
    if not parsed.scheme:
        raise StoreURLError(f"not a store URL (use {STORE_FORMS})")
    raise StoreURLError(f"unsupported store URL scheme {parsed.scheme!r} (use {STORE_FORMS})")


SQLITE_SYNCHRONOUS = ("full", "normal")


class TunedSQLiteFactory(SQLiteFactory):
    """eventsourcing's SQLite store, with two settings on every connection it opens.

    - `PRAGMA synchronous` (`sqlite:///file.sqlite?synchronous=normal`). The default, `full`,
      syncs the write-ahead log at every commit: an acked answer survives a power cut.
      `normal` syncs it only at checkpoints: every commit still survives the process being
      killed (the fault suite's crashes), but a power cut or an OS crash may take back the
      last commits, answers already acked among them; it halves a commit's cost on a disk
      where a sync is dear (measured in the README's benchmark section). An operator's
      choice, never a default.
    - No checkpoint inside a commit: a `WalCheckpointer` thread makes them while the store is
      open (`stepflow.adapters.sqlite_checkpoints`, which says why, and why a commit still
      checkpoints past `SAFETY_NET_PAGES`)."""

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        synchronous = self.env.get("SQLITE_SYNCHRONOUS", "full")
        pool = self.datastore.pool
        on_file = not pool.is_sqlite_memory_mode
        create = pool._create_connection

        def tuned() -> Any:
            connection = create()
            connection._sqlite_conn.execute(f"PRAGMA synchronous={synchronous.upper()}")  # one of two words
            if on_file:
                connection._sqlite_conn.execute(f"PRAGMA wal_autocheckpoint={SAFETY_NET_PAGES}")
            return connection

        pool._create_connection = tuned  # type: ignore[method-assign]
        self.checkpointer = WalCheckpointer(pool.db_name, lock_timeout=pool.lock_timeout or 10.0) if on_file else None
        # what the views' connection to the same file uses (`stepflow.projections.opening`)
        self.autocheckpoint_pages = SAFETY_NET_PAGES if on_file else None

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.close()
        super().close()


SQLITE_MODULE = f"{__name__}:{TunedSQLiteFactory.__name__}"


def check_store_url(url: str) -> None:
    """Raise `StoreURLError` if `url` names no store stepflow knows (no I/O)."""
    engine_env(url)


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite store URL (relative to the working directory), else None."""
    env = engine_env(url)
    if env["PERSISTENCE_MODULE"] != SQLITE_MODULE or env["SQLITE_DBNAME"] == ":memory:":
        return None
    return Path(env["SQLITE_DBNAME"])


def describe(url: str) -> str:
    """The URL without its password, fit for a log line."""
    return redact_url(url)


def make_store_dir(url: str) -> None:
    """Create the directory of a SQLite store, for a command that writes (`run`, `serve`; the
    default store's directory may not exist yet on a fresh machine). Commands that only read
    never call it: a missing store is then reported, not created."""
    path = sqlite_path(url)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StoreUnavailable(f"store unreachable: cannot create the directory {path.parent}: "
                               f"{error.strerror or error}") from error


def open_engine(url: str | None = None) -> WorkflowEngine:
    env = engine_env(store_url(url))
    with _ddl_lock(env):
        return WorkflowEngine(env=env)


def store_failure(error: BaseException, url: str) -> str | None:
    """What `error`, raised while opening or reading the store at `url`, means to its operator,
    in one line without a password; None when it is not the store's doing (a bug stays a bug).

    A missing PostgreSQL database or schema is said so: "store unreachable" sent people
    looking for a server that was up.
    """
    chain = _causes(error)
    if not any(_store_error(e) for e in chain):
        return None
    text = redact_text("; ".join(line.strip() for line in str(error).splitlines() if line.strip()), url)
    env = engine_env(url)
    where = f"{env.get('POSTGRES_HOST')}:{env.get('POSTGRES_PORT')}"
    for e in chain:
        said = str(e)
        if match := re.search(r'schema "([^"]+)" does not exist', said):
            return (f"PostgreSQL schema {match.group(1)!r} does not exist in database "
                    f"{env['POSTGRES_DBNAME']!r} at {where}: create it (CREATE SCHEMA {match.group(1)}) "
                    f"or fix ?schema= in the store URL")
        if match := re.search(r'database "([^"]+)" does not exist', said):
            return f"store unreachable: PostgreSQL database {match.group(1)!r} does not exist at {where}"
        if "unable to open database file" in said:
            return f"store unreachable: cannot open the SQLite file {env.get('SQLITE_DBNAME')}"
        if "file is not a database" in said:
            return f"store unusable: {env.get('SQLITE_DBNAME')} is not a SQLite database"
    return f"store unreachable: {text or type(error).__name__}"


def _causes(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _store_error(error: BaseException) -> bool:
    if isinstance(error, PersistenceError | StoreUnavailable):
        return True
    if isinstance(error, ConnectionError) and not isinstance(error, BrokenPipeError):
        return True
    if isinstance(error, sqlite3.DatabaseError):
        text = str(error)
        return any(s in text for s in ("unable to open", "locked", "disk I/O", "readonly", "not a database"))
    return type(error).__module__.startswith("psycopg") and type(error).__name__ in (
        "OperationalError", "InterfaceError", "PoolTimeout", "ConnectionTimeout", "InvalidSchemaName")


@contextmanager
def _ddl_lock(env: dict[str, str]) -> Iterator[None]:
    """Hold a PostgreSQL advisory lock while `eventsourcing` creates its tables.

    Its start-up DDL includes `CREATE OR REPLACE FUNCTION`, which PostgreSQL does not make safe
    against itself: two processes opening a fresh schema at once fail with "tuple concurrently
    updated". The lock (per database and schema, released with its connection) makes the second
    one wait and then find everything in place. SQLite has no such lock to take; its start-up
    races are few and transient, and `despite_ddl_race` retries them.
    """
    if env.get("PERSISTENCE_MODULE") != "eventsourcing.postgres":
        yield
        return
    import psycopg

    with psycopg.connect(
        dbname=env["POSTGRES_DBNAME"], host=env["POSTGRES_HOST"], port=env["POSTGRES_PORT"],
        user=env["POSTGRES_USER"], password=env["POSTGRES_PASSWORD"] or None, autocommit=True,
        connect_timeout=10,
    ) as conn:
        key = f"stepflow-ddl:{env['POSTGRES_DBNAME']}:{env.get('POSTGRES_SCHEMA', 'public')}"
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
        yield


# What a process sees when another one created the same store a moment before it:
# - a CREATE ... IF NOT EXISTS that lost (PostgreSQL checks the catalog before it locks it);
# - eventsourcing's single-row tracking table, whose "__migration__" row is inserted after a
#   check made outside the transaction (SQLite and PostgreSQL);
# - SQLite switching a new file to WAL, which fails at once, without waiting, when another
#   connection is doing the same (an ordinary lock wait is covered by the 10 s busy timeout).
_DDL_RACES = ("already exists", "pg_type_typname_nsp_index", "tuple concurrently updated",
              "Failed to record tracking for __migration__", "database is locked")


def lost_ddl_race(error: BaseException) -> bool:
    return any(sign in str(error) for sign in _DDL_RACES)


def despite_ddl_race_now(call: Callable[[], T], attempts: int = 5) -> T:
    """`despite_ddl_race` for a synchronous caller (wiring done before the event loop runs
    anything: a short sleep at start-up blocks nothing)."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as error:
            if not lost_ddl_race(error) or attempt == attempts - 1:
                raise
            log.info("store_table_race_retry", error=repr(error)[:200], attempt=attempt + 1)
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


@overload
async def despite_ddl_race(call: Callable[[], Awaitable[T]], attempts: int = 5) -> T: ...
@overload
async def despite_ddl_race(call: Callable[[], T], attempts: int = 5) -> T: ...
async def despite_ddl_race(call: Callable[[], Any], attempts: int = 5) -> Any:
    """`call()`, again if it lost a race with another process creating the same tables, which
    is what two backends starting at once on a fresh store do. Whatever else fails, fails."""
    for attempt in range(attempts):
        try:
            result = call()
            return await result if inspect.isawaitable(result) else result
        except Exception as error:
            if not lost_ddl_race(error) or attempt == attempts - 1:
                raise
            log.info("store_table_race_retry", error=repr(error)[:200], attempt=attempt + 1)
            await asyncio.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")
