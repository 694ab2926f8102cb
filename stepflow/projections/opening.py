"""Opening the view store beside an engine's event store (same SQLite file, same PG schema).

Apart from `stepflow.projections.store`, which the two stores import: picking one of them
there made an import circle. PostgreSQL's store is imported only for a PostgreSQL engine
(psycopg is an optional dependency).
"""

from __future__ import annotations

from typing import Any

from eventsourcing.sqlite import SQLiteFactory

from stepflow.projections.sqlite import SQLiteViewStore
from stepflow.projections.store import ViewStore


def open_view_store(engine: Any) -> ViewStore:
    """The view store beside an engine's event store; in-memory SQLite for a `memory://` engine."""
    datastore: Any = getattr(engine.factory, "datastore", None)
    module = type(engine.factory).__module__
    if isinstance(engine.factory, SQLiteFactory):  # stepflow's own (`TunedSQLiteFactory`) included
        if datastore.pool.is_sqlite_memory_mode:
            return SQLiteViewStore(":memory:")
        # Where the store's own thread checkpoints the file, the views' commits leave it to it too.
        return SQLiteViewStore(datastore.pool.db_name, lock_timeout=datastore.pool.lock_timeout or 10,
                               autocheckpoint_pages=getattr(engine.factory, "autocheckpoint_pages", None))
    if module.startswith("eventsourcing.postgres"):
        from stepflow.projections.postgres import PostgresViewStore

        return PostgresViewStore(datastore)
    return SQLiteViewStore(":memory:")
