"""Views in SQLite: by default the event store's own file, in tables of their own.

One writing connection per store, shared by the threads of a process under a lock, and one
reading connection per thread, so queries (the CLI, an HTTP handler) never wait for the
runner's batch: in WAL mode readers see the last commit while a write is under way (an
in-memory store has a single connection). Writes take the database lock up front (`BEGIN IMMEDIATE`), so a
batch never fails half-way on a lock upgrade when the backend is storing events at the same
time; the busy timeout makes either side wait for the other. `synchronous=NORMAL` is enough
for views: a view and its tracking row are committed together, so a lost last commit after
a power cut is simply applied again.

SQLite has no notifications: the runner polls (see `stepflow.projections.runner`).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

from stepflow.projections.store import Table, Tx, ViewStore


class _SQLiteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.conn.execute(sql, params)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.conn.executemany(sql, rows)


class SQLiteViewStore(ViewStore):
    dialect: ClassVar[str] = "sqlite"
    types: ClassVar[dict[str, str]] = {"text": "TEXT", "int": "INTEGER", "real": "REAL"}

    def __init__(self, path: str, *, lock_timeout: float = 10.0, autocheckpoint_pages: int | None = None) -> None:
        """`autocheckpoint_pages`: where the writing connection checkpoints (SQLite's default,
        1,000 pages, if None): the event store's factory sets it when a thread of its own
        checkpoints the file (`stepflow.adapters.sqlite_checkpoints`)."""
        self.path = path
        self.lock_timeout = lock_timeout
        self._lock = threading.RLock()
        self._conn = self._connect()
        if path != ":memory:":
            self._conn.execute("PRAGMA journal_mode=WAL")
            if autocheckpoint_pages is not None:
                self._conn.execute(f"PRAGMA wal_autocheckpoint={int(autocheckpoint_pages)}")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA cache_size=-65536")  # 64 MiB, for rebuilds
        self._conn.execute("PRAGMA temp_store=MEMORY")
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=self.lock_timeout, cached_statements=256)

    def _reader(self) -> sqlite3.Connection | None:
        if self.path == ":memory:":
            return None
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            with self._lock:
                self._readers.append(conn)
        return conn

    def table_suffix(self, table: Table) -> str:
        """Rows in key order; a single integer key is the rowid itself (appends stay cheap)."""
        if len(table.key) == 1 and dict(table.columns)[table.key[0]] == "int":
            return ""
        return " WITHOUT ROWID"

    @contextmanager
    def read(self) -> Iterator[Tx]:
        conn = self._reader()
        if conn is None:
            with self._lock:
                yield from self._snapshot(self._conn)
        else:
            yield from self._snapshot(conn)

    @staticmethod
    def _snapshot(conn: sqlite3.Connection) -> Iterator[Tx]:
        conn.execute("BEGIN")
        try:
            yield _SQLiteTx(conn)
        finally:
            conn.execute("ROLLBACK")

    @contextmanager
    def write(self) -> Iterator[Tx]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SQLiteTx(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _lock_position(self, tx: Tx, view: str) -> int | None:
        rows = tx.query("SELECT position FROM sf_tracking WHERE view = ?", (view,))
        return rows[0][0] if rows else None

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            for conn in self._readers:
                conn.close()
            self._readers.clear()
