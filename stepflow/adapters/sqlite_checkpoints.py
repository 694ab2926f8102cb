"""SQLite's write-ahead log checkpointed in a thread of its own, not inside a commit.

By default SQLite checkpoints inside the commit that takes the log past 1,000 pages: that
commit copies the log into the database file and syncs it, about ten times a plain commit's
time (15-19 ms against 1.3-1.8, one commit in ten, in a run of the views' commits: README,
"Fifth pass"). The event store's commits are on every step's and every start's path (the
backend's store thread), so whatever is queued behind such a commit waits too.

So a `WalCheckpointer` makes a PASSIVE checkpoint every `interval_s` from its own connection
(it never waits for a lock, and SQLite releases the GIL for the copy and the sync), and the
store's connections checkpoint only past `SAFETY_NET_PAGES`. A PASSIVE checkpoint copies what
the log held when it began; the log starts over only once a checkpoint has copied it all
before the next commit, so under writes without a pause the log would grow without end. The
safety net bounds it: the commit that takes it past the net checkpoints, and finds most of
the log already copied by the thread. A process that opens the store (`TunedSQLiteFactory`)
runs a checkpointer until it closes the store, and the views' connection to the same file
(`stepflow.projections.opening`) keeps to the same safety net: otherwise its commits would
make every checkpoint the store's no longer make. A checkpoint that fails (the file gone, a
disk error) is logged once, and the next one tries again: every commit is in the log
meanwhile.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import urllib.parse
import weakref

import structlog

log = structlog.get_logger("stepflow.persistence")

INTERVAL_S = 0.2  # at a few hundred pages a second, a checkpoint of well under 1,000 pages
SAFETY_NET_PAGES = 10_000  # about 40 MiB of log: a commit checkpoints only past it


class WalCheckpointer:
    """A daemon thread making a PASSIVE checkpoint of one database file every `interval_s`.

    The thread holds this object weakly: a store dropped without `close()` (a script, a test)
    stops its thread at the next interval instead of leaving it running."""

    def __init__(self, path: str, *, interval_s: float = INTERVAL_S, lock_timeout: float = 10.0) -> None:
        self.path = path
        self.lock_timeout = lock_timeout
        self.last: tuple[int, int, int] | None = None  # (busy, frames in the log, frames copied)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=_run, args=(weakref.ref(self), interval_s, self._stop),
                                        name="stepflow-wal-checkpoints", daemon=True)
        self._thread.start()

    def checkpoint(self, connection: sqlite3.Connection) -> None:
        row = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.last = (int(row[0]), int(row[1]), int(row[2]))

    def connect(self) -> sqlite3.Connection:
        """Never creates the file (`mode=rw`): the store made it, and a deleted one stays so."""
        uri = "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=rw"
        return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                               timeout=self.lock_timeout)

    def close(self) -> None:
        """Stop after the checkpoint under way (the last connection to close checkpoints all)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()


def _run(owner: weakref.ref[WalCheckpointer], interval_s: float, stop: threading.Event) -> None:
    connection: sqlite3.Connection | None = None
    failing = False
    try:
        while not stop.wait(interval_s):
            checkpointer = owner()  # held only for this checkpoint: the store may be dropped meanwhile
            if checkpointer is None:
                return
            try:
                if connection is None:
                    connection = checkpointer.connect()
                checkpointer.checkpoint(connection)
                failing = False
            except sqlite3.Error as error:
                (log.debug if failing else log.warning)("wal_checkpoint_failed", path=checkpointer.path,
                                                        error=str(error))
                failing = True
            del checkpointer
    finally:
        if connection is not None:
            connection.close()
