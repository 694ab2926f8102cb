"""Views in PostgreSQL: the event store's schema and connection pool, tables of their own.

The store borrows connections from the `eventsourcing` datastore's pool (same settings,
same credentials) and sets `search_path` to the store's schema in each transaction, so the
SQL is the same as for SQLite (`?` placeholders are rewritten to psycopg's `%s`). A batch
locks its view's tracking row with `SELECT ... FOR UPDATE`; `executemany` is pipelined by
psycopg, so a batch of upserts is one round trip per few hundred rows.

PostgreSQL has notifications: `listen_connection()` opens a separate autocommit connection
the runner uses to `LISTEN` on the channel the event store notifies after every insert,
instead of polling.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from stepflow.projections.store import Tx, ViewStore

_converted: dict[str, str] = {}


def _pg(statement: str) -> str:
    try:
        return _converted[statement]
    except KeyError:
        converted = _converted[statement] = statement.replace("?", "%s")
        return converted


class _PostgresTx:
    def __init__(self, cursor: psycopg.Cursor[tuple[Any, ...]]) -> None:
        self.cursor = cursor

    def execute(self, statement: str, params: Sequence[Any] = ()) -> None:
        self.cursor.execute(_pg(statement), params)  # type: ignore[arg-type]

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self.cursor.execute(_pg(statement), params)  # type: ignore[arg-type]
        return self.cursor.fetchall()

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.cursor.executemany(_pg(statement), rows)  # type: ignore[arg-type]


class PostgresViewStore(ViewStore):
    dialect: ClassVar[str] = "postgres"
    types: ClassVar[dict[str, str]] = {"text": "TEXT", "int": "BIGINT", "real": "DOUBLE PRECISION"}

    def __init__(self, datastore: Any) -> None:
        """`datastore`: an `eventsourcing.postgres.PostgresDatastore` (the engine's)."""
        self.datastore = datastore
        self.schema: str = datastore.schema
        self._search_path = sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(self.schema))

    @contextmanager
    def _transaction(self) -> Iterator[Tx]:
        with (
            self.datastore.get_connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=tuple_row) as cursor,
        ):
            cursor.execute(self._search_path)
            yield _PostgresTx(cursor)

    @contextmanager
    def read(self) -> Iterator[Tx]:
        with self._transaction() as tx:
            yield tx

    @contextmanager
    def write(self) -> Iterator[Tx]:
        with self._transaction() as tx:
            yield tx

    def _lock_position(self, tx: Tx, view: str) -> int | None:
        rows = tx.query("SELECT position FROM sf_tracking WHERE view = ? FOR UPDATE", (view,))
        return rows[0][0] if rows else None

    def listen_connection(self, channel: str) -> psycopg.Connection[Any]:
        """A new autocommit connection listening on `channel` (the caller closes it)."""
        kwargs = dict(self.datastore.pool.kwargs)
        kwargs.pop("row_factory", None)
        conn = psycopg.connect(autocommit=True, **kwargs)
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        return conn

    def close(self) -> None:
        """The pool belongs to the engine, which closes it."""
