"""Opening the view store beside an engine's event store (same SQLite file, same PG schema).

Apart from `stepflow.projections.store`, which the two stores import: picking one of them
there made an import circle. PostgreSQL's store is imported only for a PostgreSQL engine
(psycopg is an optional dependency).
"""

from __future__ import annotations

from typing import Any

from stepflow.projections.sqlite import SQLiteViewStore
from stepflow.projections.store import ViewStore


def open_view_store(engine: Any) -> ViewStore:
    """The view store beside an engine's event store; in-memory SQLite for a `memory://` engine."""
    datastore: Any = getattr(engine.factory, "datastore", None)
    module = type(engine.factory).__module__
    if module.startswith("eventsourcing.sqlite"):
        if datastore.pool.is_sqlite_memory_mode:
            return SQLiteViewStore(":memory:")
        return SQLiteViewStore(datastore.pool.db_name, lock_timeout=datastore.pool.lock_timeout or 10)
    if module.startswith("eventsourcing.postgres"):
        from stepflow.projections.postgres import PostgresViewStore

        return PostgresViewStore(datastore)
    return SQLiteViewStore(":memory:")
