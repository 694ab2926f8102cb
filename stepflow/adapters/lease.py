"""The backend lease: one backend process at a time runs the active parts, per store.

Several `stepflow serve` processes on one store and one broker must not double the work:
each would publish every order (the outbox follows one shared log), consume responses for
the same workflows (version-check collisions), and fire every deadline, retry and hook. So
the active parts (inbox consumption, outbox, deadlines, hooks) run only in the process that
holds this lease; the others stand by, serve HTTP, and poll for the lease.

Why active/standby and not partitioning: original Step Flow workers answer with nothing but
the job id (no headers, no workflow id), so a response cannot be routed to the backend that
owns its workflow without a forwarding hop; one active backend is simple, and its throughput
is that of one process (see docs/scaling.md).

The lock is one the operating system or the database releases when the holder dies, even by
SIGKILL, so a standby polling every `POLL_S` takes over within about one poll:

- PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`) on a dedicated psycopg
  connection (the driver `eventsourcing.postgres` uses), keyed by the store's schema. The
  server ends the session, and so the lock, as soon as the holder's socket closes. The holder
  also `LISTEN`s on that connection to the channel the event store notifies after every
  insert, so orders stored by a standby (an HTTP start) wake its outbox at once.
- SQLite: `fcntl.flock` on `<database>.lease` beside the file (one machine: the file's).
- in-memory store: always held (nothing else can see the store).

Losing the lease without dying: the holder checks its connection every `CHECK_S` (a
`SELECT 1` with a `CHECK_TIMEOUT_S` bound, between waits for notifications) and steps down
when it fails. The server may have dropped the session (and a standby taken the lock) up to
`CHECK_S + CHECK_TIMEOUT_S` before the holder notices: during that window both may publish
or consume. That only ever repeats work (an order republished from the tracked position, a
response applied once by the version check and ignored by the other), which at-least-once
delivery already allows; nothing is lost, because stored events are the truth and each
process re-reads its positions from the store when it becomes active.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import structlog

from stepflow.adapters.persistence import SQLITE_MODULE, engine_env

log = structlog.get_logger("stepflow.lease")

POLL_S = 0.25  # a standby tries the lock this often (the lead may make it a setting)
CHECK_S = 0.25  # the holder checks its lock connection this often
CHECK_TIMEOUT_S = 1.0  # a check that takes longer counts as a lost connection
CONNECT_TIMEOUT_S = 3.0


class Lease(Protocol):
    """Held by one process at a time; released by the OS or the database when it dies."""

    on_wake: Callable[[], None] | None  # called (holder) when another process stored events

    @property
    def name(self) -> str:
        """What is locked, for log lines (no password)."""

    async def try_acquire(self) -> bool:
        """Take the lease if nobody holds it; True when this process holds it now."""

    async def watch(self) -> None:
        """Return when the held lease is lost (never, for a lock only death releases)."""

    async def close(self) -> None:
        """Release the lease (if held) and what it holds open."""


class HeldLease:
    """The in-memory store (and a private in-process broker): nobody else could be active."""

    name = "in-process"

    def __init__(self) -> None:
        self.on_wake: Callable[[], None] | None = None

    async def try_acquire(self) -> bool:
        return True

    async def watch(self) -> None:
        await asyncio.Event().wait()

    async def close(self) -> None:
        return None


class FileLease:
    """An exclusive `flock` on a file beside a SQLite database; the kernel drops it on exit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)
        self.on_wake: Callable[[], None] | None = None
        self._fd: int | None = None

    async def try_acquire(self) -> bool:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    async def watch(self) -> None:
        await asyncio.Event().wait()  # a local lock is lost only with the process

    async def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing the last descriptor releases the lock
            self._fd = None


class PostgresLease:
    """A session advisory lock on a connection of its own (never one of the store's pool,
    whose sessions come and go)."""

    def __init__(self, conninfo: str, key: int, *, channel: str | None = None, name: str = "") -> None:
        self.conninfo = conninfo
        self.key = key
        self.channel = channel
        self.name = name or f"advisory lock {key}"
        self.on_wake: Callable[[], None] | None = None
        self._conn: Any = None  # psycopg.AsyncConnection
        self._unreachable = False  # said once, until it answers again

    async def try_acquire(self) -> bool:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S + CHECK_TIMEOUT_S):
                conn = await self._connection()
                cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
                row = await cursor.fetchone()
                held = bool(row and row[0])
                if held and self.channel:
                    from psycopg import sql

                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except Exception as error:  # noqa: BLE001  no server now: stay standby, try again
            if not self._unreachable:
                log.warning("lease_store_unreachable", lease=self.name, error=repr(error)[:200])
                self._unreachable = True
            await self._drop()
            return False
        self._unreachable = False
        return held

    async def watch(self) -> None:
        """Wait for notifications (waking the outbox) and check the connection in turns;
        return when it failed or hung: the server has, or soon will have, dropped the lock."""
        conn = self._conn
        assert conn is not None, "acquire first"
        try:
            while True:
                async with asyncio.timeout(CHECK_S + CHECK_TIMEOUT_S):
                    async for _ in conn.notifies(timeout=CHECK_S):
                        if self.on_wake is not None:
                            self.on_wake()
                async with asyncio.timeout(CHECK_TIMEOUT_S):
                    await conn.execute("SELECT 1")
        except Exception as error:  # noqa: BLE001  whatever broke, the lock cannot be trusted
            log.warning("lease_connection_failed", lease=self.name, error=repr(error)[:200])
        await self._drop()

    async def close(self) -> None:
        await self._drop()  # the session ends, and with it the lock

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            import psycopg

            self._conn = await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT_S),
                application_name="stepflow-lease")
        return self._conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


def lease_key(schema: str) -> int:
    """A signed 64-bit advisory lock key for a store's schema (locks are per database)."""
    digest = hashlib.blake2b(f"stepflow.backend:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def open_lease(store_url: str, *, channel: str | None = None) -> Lease:
    """The lease for a store URL (`channel`: the event store's notification channel, on
    PostgreSQL). No I/O: the lock is taken by `try_acquire`."""
    env = engine_env(store_url)
    module = env["PERSISTENCE_MODULE"]
    if module == "eventsourcing.postgres":
        from psycopg.conninfo import make_conninfo

        schema = env.get("POSTGRES_SCHEMA", "public")
        conninfo = make_conninfo(dbname=env["POSTGRES_DBNAME"], host=env["POSTGRES_HOST"],
                                 port=env["POSTGRES_PORT"], user=env["POSTGRES_USER"],
                                 password=env["POSTGRES_PASSWORD"] or None)
        where = f"{env['POSTGRES_HOST']}:{env['POSTGRES_PORT']}/{env['POSTGRES_DBNAME']}?schema={schema}"
        return PostgresLease(conninfo, lease_key(schema), channel=channel, name=where)
    if module == SQLITE_MODULE and env["SQLITE_DBNAME"] != ":memory:":
        return FileLease(Path(env["SQLITE_DBNAME"] + ".lease"))
    return HeldLease()
