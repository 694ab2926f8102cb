"""Persistence settings: a store URL becomes the environment `eventsourcing` is configured by.

    sqlite:///file.sqlite, sqlite:////abs/file.sqlite   (default: ./stepflow.sqlite)
    postgresql://user:password@host:port/dbname?schema=NAME
    memory://                       (plain Python objects, for tests and throwaway runs)

This is the only place that knows connection strings. A password is read from the URL or
from `POSTGRES_PASSWORD`, and never logged: `describe()` gives a safe form for logs.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, overload
from urllib.parse import parse_qs, unquote, urlparse

import structlog

from stepflow.engine.application import WorkflowEngine
from stepflow.settings import load_settings, redact_url

log = structlog.get_logger("stepflow.persistence")
T = TypeVar("T")



def store_url(explicit: str | None = None) -> str:
    """`explicit`, else the store of the settings (`STEPFLOW_STORE` or the default)."""
    return explicit or load_settings().store


def engine_env(url: str) -> dict[str, str]:
    parsed = urlparse(url)
    if parsed.scheme == "memory":
        return {"PERSISTENCE_MODULE": "eventsourcing.popo"}
    if parsed.scheme == "sqlite":
        # As in SQLAlchemy: sqlite:///relative.sqlite, sqlite:////absolute.sqlite
        path = unquote(url.split("://", 1)[1].removeprefix("/").split("?", 1)[0])
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": path or "stepflow.sqlite",
            "SQLITE_LOCK_TIMEOUT": "10",
        }
    if parsed.scheme in ("postgres", "postgresql"):
        query = parse_qs(parsed.query)
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": parsed.path.lstrip("/") or "stepflow",
            "POSTGRES_HOST": parsed.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parsed.port or 5432),
            "POSTGRES_USER": unquote(parsed.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(parsed.password or os.environ.get("POSTGRES_PASSWORD", "")),
            "POSTGRES_POOL_SIZE": "5",
            "POSTGRES_MAX_OVERFLOW": "10",
        }
        if "schema" in query:
            env["POSTGRES_SCHEMA"] = query["schema"][0]
        return env
    raise ValueError(f"unsupported store URL scheme {parsed.scheme!r} (sqlite, postgresql, memory)")


def describe(url: str) -> str:
    """The URL without its password, fit for a log line."""
    return redact_url(url)


def open_engine(url: str | None = None) -> WorkflowEngine:
    env = engine_env(store_url(url))
    with _ddl_lock(env):
        return WorkflowEngine(env=env)


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
