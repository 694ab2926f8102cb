"""Reading the notification log fast: `(notification id, event)` pairs in batches.

`engine.notifications(after, limit)` goes through `eventsourcing`'s recorder, which builds a
`Notification` object (and parses a UUID) per row before our mapper decodes the event; that
costs more than the decoding itself. Projections read millions of rows, so for the two
stores stepflow supports this module runs the recorder's own query (same table, same
order, same `> after LIMIT n`, see `SQLiteApplicationRecorder.select_notifications` and
`PostgresApplicationRecorder.select_notifications`) and decodes the state column with the
events' codec, as the mapper does: one msgspec call for an event of the current schema
version, the upcasting path only for one stored in an older version. Anything unusual
(compression or encryption configured, another store) goes through the engine's mapper, so
the result is always what `engine.notifications` would return.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import msgspec

from stepflow.engine import events as ev

ReadLog = Callable[[int, int], list[tuple[int, ev.Event]]]

_decode_current = ev.codec.fast
_decode_old = ev.codec.decode_old


def log_reader(engine: Any) -> ReadLog:
    """A function `(after, limit) -> [(notification id, event)]` for this engine's store."""
    mapper = engine.mapper
    recorder = engine.recorder
    if getattr(mapper, "cipher", None) or getattr(mapper, "compressor", None):
        return engine.notifications  # type: ignore[no-any-return]
    module = type(recorder).__module__
    if module == "eventsourcing.sqlite" and not recorder.datastore.pool.is_sqlite_memory_mode:
        return _SQLiteLog(recorder)
    if module == "eventsourcing.postgres":
        return _PostgresLog(recorder)
    return engine.notifications  # type: ignore[no-any-return]


def _decode(state: bytes) -> ev.Event:
    try:
        return _decode_current(state)  # type: ignore[no-any-return]
    except msgspec.ValidationError as error:
        return _decode_old(state, error)  # type: ignore[no-any-return]


class _SQLiteLog:
    def __init__(self, recorder: Any) -> None:
        pool = recorder.datastore.pool
        self.conn = sqlite3.connect(pool.db_name, uri=True, check_same_thread=False,
                                    timeout=pool.lock_timeout or 5, isolation_level=None)
        self.sql = (f"SELECT rowid, originator_id, originator_version, topic, state "
                    f"FROM {recorder.events_table_name} WHERE rowid > ? ORDER BY rowid LIMIT ?")

    def __call__(self, after: int, limit: int) -> list[tuple[int, ev.Event]]:
        rows = self.conn.execute(self.sql, (after, limit)).fetchall()
        decode = _decode_current
        out = []
        for row in rows:
            try:
                out.append((row[0], decode(row[4])))
            except msgspec.ValidationError as error:  # stored in an older schema version
                out.append((row[0], _decode_old(row[4], error)))
        return out

    def close(self) -> None:
        self.conn.close()


class _PostgresLog:
    def __init__(self, recorder: Any) -> None:
        from psycopg import sql
        from psycopg.rows import tuple_row

        self.datastore = recorder.datastore
        self.row_factory = tuple_row
        self.sql = sql.SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state FROM {}.{} "
            "WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
        ).format(sql.Identifier(self.datastore.schema), sql.Identifier(recorder.events_table_name))

    def __call__(self, after: int, limit: int) -> list[tuple[int, ev.Event]]:
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=self.row_factory) as cursor:
            cursor.execute(self.sql, (after, limit), prepare=True)
            rows = cursor.fetchall()
        return [(row[0], _decode(row[4])) for row in rows]

    def close(self) -> None:
        """Connections belong to the engine's pool."""
