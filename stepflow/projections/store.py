"""Where views live: the `ViewStore` interface, table specs and the tracking table.

A view is a handful of tables plus one row in `sf_tracking` holding the notification id it
has applied up to. The runner changes both in one transaction, so after a crash a view
resumes exactly where its last committed batch ended: nothing lost, nothing applied twice.

Two implementations share this interface and the same SQL (written with `?` placeholders,
rewritten for psycopg): `stepflow.projections.sqlite` and `stepflow.projections.postgres`.
`open_view_store(engine)` picks the one matching the engine's event store, so views sit in
the same database (same SQLite file, same PostgreSQL schema) in tables of their own; an
engine on plain Python objects (`memory://`) gets an in-memory SQLite database. It lives in
`stepflow.projections.opening`: the stores import this module, which imports neither.

A view store is also where the runner's `LogFollower`s keep their positions (`position`,
`advance`: see `stepflow.engine.follower.Positions`).

Concurrency: `advance(view, expected, position)` locks the view's tracking row (`BEGIN
IMMEDIATE` on SQLite, `SELECT ... FOR UPDATE` on PostgreSQL) and checks its position. Two
runners on one view (a backend and a `stepflow project` process) therefore never
interleave: the second gets `PositionMoved`, takes the first's new position and re-reads
from there.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, NamedTuple, Protocol

CHUNK = 500  # keys per `IN (...)` lookup


class Tx(Protocol):
    """An open transaction: `?` placeholders, rows as tuples."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


class Table(NamedTuple):
    """A view table: columns in row order, `(name, kind)` with kind text | int | real.

    `key` is the primary key; `unique`, if given, is the natural key rows are upserted on.
    A table keyed by one integer that only grows (a notification id) is stored in that
    order, so inserts append instead of landing at random places in the tree.
    """

    name: str
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...]
    indexes: tuple[tuple[str, ...], ...] = ()
    unique: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.columns]

    @property
    def conflict(self) -> tuple[str, ...]:
        return self.unique or self.key

    def select(self) -> str:
        return f"SELECT {', '.join(self.names)} FROM {self.name}"

    def upsert(self) -> str:
        cols = self.names
        fixed = set(self.key) | set(self.conflict)
        update = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in fixed)
        return (f"INSERT INTO {self.name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                f"ON CONFLICT ({', '.join(self.conflict)}) DO UPDATE SET {update}")

    def insert_ignore(self) -> str:
        cols = self.names
        return (f"INSERT INTO {self.name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                f"ON CONFLICT ({', '.join(self.conflict)}) DO NOTHING")


class ViewSpec(Protocol):
    """What the store needs to know of a view to create, drop and track it."""

    name: ClassVar[str]
    schema_version: ClassVar[int]
    tables: ClassVar[tuple[Table, ...]]


TRACKING = Table(
    "sf_tracking",
    (("view", "text"), ("position", "int"), ("schema_version", "int"), ("updated_at", "real")),
    key=("view",),
)


class PositionMoved(Exception):
    """Another runner advanced the view since its position was read; read again."""


class ViewStore(ABC):
    dialect: ClassVar[str]
    types: ClassVar[dict[str, str]]

    # --- implemented per database ------------------------------------------------------

    @abstractmethod
    @contextmanager
    def read(self) -> Iterator[Tx]:
        """A read-only transaction."""

    @abstractmethod
    @contextmanager
    def write(self) -> Iterator[Tx]:
        """A transaction holding the database's write lock where there is one (SQLite)."""

    @abstractmethod
    def _lock_position(self, tx: Tx, view: str) -> int | None:
        """Lock the view's tracking row for this transaction and return its position."""

    @abstractmethod
    def close(self) -> None: ...

    def table_suffix(self, table: Table) -> str:
        return ""

    # --- tables ------------------------------------------------------------------------

    def create_tables(self, tx: Tx, tables: Iterable[Table], indexes: bool = True) -> None:
        for table in tables:
            cols = ", ".join(f"{name} {self.types[kind]}" for name, kind in table.columns)
            tx.execute(f"CREATE TABLE IF NOT EXISTS {table.name} ({cols}, "
                       f"PRIMARY KEY ({', '.join(table.key)})){self.table_suffix(table)}")
            if table.unique:
                tx.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {table.name}_{'_'.join(table.unique)}_key "
                           f"ON {table.name} ({', '.join(table.unique)})")
        if indexes:
            self.create_indexes(tx, tables)

    def create_indexes(self, tx: Tx, tables: Iterable[Table]) -> None:
        """Secondary indexes (a rebuild adds them at the end: one sort beats a million inserts)."""
        for table in tables:
            for columns in table.indexes:
                index = f"{table.name}_{'_'.join(columns)}_idx"
                tx.execute(f"CREATE INDEX IF NOT EXISTS {index} ON {table.name} ({', '.join(columns)})")

    def ensure(self, view: ViewSpec) -> None:
        """Create the view's tables and tracking row if missing; recreate on a schema change."""
        with self.write() as tx:
            self.create_tables(tx, [TRACKING])
            row = tx.query("SELECT schema_version FROM sf_tracking WHERE view = ?", (view.name,))
            if row and row[0][0] == view.schema_version:
                self.create_indexes(tx, view.tables)  # after an interrupted rebuild
                return
            self._reset(tx, view)

    def reset(self, view: ViewSpec, indexes: bool = True) -> None:
        """Drop the view's tables, create them empty and set its position to 0, atomically."""
        with self.write() as tx:
            self.create_tables(tx, [TRACKING])
            self._reset(tx, view, indexes)

    def finish_rebuild(self, view: ViewSpec) -> None:
        with self.write() as tx:
            self.create_indexes(tx, view.tables)

    def _reset(self, tx: Tx, view: ViewSpec, indexes: bool = True) -> None:
        for table in view.tables:
            tx.execute(f"DROP TABLE IF EXISTS {table.name}")
        self.create_tables(tx, view.tables, indexes)
        tx.execute(TRACKING.upsert(), (view.name, 0, view.schema_version, time.time()))

    # --- tracking ----------------------------------------------------------------------

    def positions(self, names: Sequence[str] | None = None) -> dict[str, int]:
        with self.read() as tx:
            rows = tx.query("SELECT view, position FROM sf_tracking")
        found = {name: position for name, position in rows}
        if names is None:
            return found
        return {name: found.get(name, 0) for name in names}

    def position(self, view: str) -> int | None:
        """The view's position; None before `ensure` made its tracking row."""
        with self.read() as tx:
            rows = tx.query("SELECT position FROM sf_tracking WHERE view = ?", (view,))
        return rows[0][0] if rows else None

    @contextmanager
    def advance(self, view: str, expected: int, position: int) -> Iterator[Tx]:
        """A transaction that moves `view` from `expected` to `position` when the body succeeds.

        Raises `PositionMoved` (nothing written) if the view is no longer at `expected`.
        """
        with self.write() as tx:
            self._check_position(tx, view, expected)
            yield tx
            self._move(tx, view, position)

    @contextmanager
    def advance_in(self, tx: Tx, view: str, expected: int, position: int) -> Iterator[Tx]:
        """`advance` inside the caller's write transaction, as a savepoint of it: the runner
        applies a batch to every view in one transaction (one write lock, one commit, not one
        a view), and a view that fails or whose position moved is rolled back alone."""
        tx.execute("SAVEPOINT sf_advance")
        try:
            self._check_position(tx, view, expected)
            yield tx
            self._move(tx, view, position)
        except BaseException:
            tx.execute("ROLLBACK TO SAVEPOINT sf_advance")
            tx.execute("RELEASE SAVEPOINT sf_advance")
            raise
        tx.execute("RELEASE SAVEPOINT sf_advance")

    def _check_position(self, tx: Tx, view: str, expected: int) -> None:
        current = self._lock_position(tx, view)
        if current != expected:
            raise PositionMoved(f"{view} is at {current}, expected {expected}")

    @staticmethod
    def _move(tx: Tx, view: str, position: int) -> None:
        tx.execute("UPDATE sf_tracking SET position = ?, updated_at = ? WHERE view = ?", (position, time.time(), view))

    def wait(self, names: Sequence[str], notification_id: int, timeout: float,
             interval: float = 0.02) -> bool:
        """Block until every named view has applied `notification_id`; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            positions = self.positions(names)
            if all(positions[name] >= notification_id for name in names):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)


def fetch_in(tx: Tx, select: str, column: str, keys: Iterable[Any], extra: str = "",
             params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """`select WHERE column IN (keys) extra`, in chunks."""
    keys = list(keys)
    rows: list[tuple[Any, ...]] = []
    for i in range(0, len(keys), CHUNK):
        chunk = keys[i:i + CHUNK]
        marks = ", ".join("?" * len(chunk))
        rows.extend(tx.query(f"{select} WHERE {column} IN ({marks}) {extra}", [*chunk, *params]))
    return rows


def delete_in(tx: Tx, table: str, column: str, keys: Iterable[Any]) -> None:
    keys = list(keys)
    for i in range(0, len(keys), CHUNK):
        chunk = keys[i:i + CHUNK]
        tx.execute(f"DELETE FROM {table} WHERE {column} IN ({', '.join('?' * len(chunk))})", chunk)
