"""The event store's commits leave checkpoints to a thread of their own (real SQLite files).

A commit that checkpoints copies the write-ahead log into the database and syncs it: ten
times a plain commit's time, on every step's path. So the store's connections checkpoint
only past a safety net far above SQLite's 1,000 pages, and a `WalCheckpointer` does it while
the store is open. Seen from outside: without the thread, the log outgrows SQLite's
threshold (no commit checkpointed, it never starts over) up to the net and no further; with
the thread, every page ends up in the database file.
"""

from __future__ import annotations

import gc
import sqlite3
import threading
from pathlib import Path

import pytest
from amqp_fixtures import wait_until

from stepflow.adapters.persistence import open_engine
from stepflow.adapters.sqlite_checkpoints import SAFETY_NET_PAGES, WalCheckpointer
from stepflow.engine.application import Start, WorkflowEngine
from stepflow.engine.definitions import build_definition
from stepflow.projections import ProjectionRunner

pytestmark = pytest.mark.integration

DEFINITION = build_definition({"identifier": "pages", "parameters": [{"id": "blob", "type": "string"}],
                               "steps": [{"id": "a", "job_type": "a", "parameters": {"blob": "{workflow.blob}"}}]})
AUTOCHECKPOINT_PAGES = 1000  # SQLite's default threshold


def wal_frames(path: Path) -> int:
    """Frames the log file has room for: it grows until a checkpoint lets it start over."""
    wal = Path(f"{path}-wal")
    if not wal.exists():
        return 0
    with sqlite3.connect(path) as connection:
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    return max(0, (wal.stat().st_size - 32) // (page_size + 24))


def write_pages(engine: WorkflowEngine, starts: int = 1500) -> None:
    """About 6 MiB of events in commits of 50 starts: well past 1,000 pages of 4 KiB."""
    for _ in range(starts // 50):
        engine.start_workflows([Start(definition=DEFINITION, parameters={"blob": "x" * 3000}) for _ in range(50)])


def frames_after_writes(engine: WorkflowEngine, path: Path, starts: int = 1500) -> int:
    """The log's frames after `write_pages`, with the commits alone (no checkpointer thread)."""
    try:
        checkpointer = getattr(engine.factory, "checkpointer", None)
        if checkpointer is not None:
            checkpointer.close()
        write_pages(engine, starts)
        return wal_frames(path)
    finally:
        engine.close()


def copied_whole(checkpointer: WalCheckpointer) -> bool:
    return checkpointer.last is not None and checkpointer.last[1] == checkpointer.last[2] > 0


def test_below_the_safety_net_the_commits_never_checkpoint_and_the_thread_does(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    grown = frames_after_writes(open_engine(f"sqlite:///{path}"), path)
    assert grown > 2 * AUTOCHECKPOINT_PAGES  # never started over: no commit checkpointed

    engine = open_engine(f"sqlite:///{path}")  # (closing copied the log: write it again)
    engine.factory.checkpointer.close()  # type: ignore[attr-defined]
    checkpointer = None
    try:
        write_pages(engine)
        checkpointer = WalCheckpointer(str(path), interval_s=0.05)
        wait_until(lambda: copied_whole(checkpointer), 10, "a complete checkpoint")
        assert checkpointer.last is not None and checkpointer.last[1] > 2 * AUTOCHECKPOINT_PAGES
        engine.start_workflow(DEFINITION, {"blob": "after"})  # the next commit starts the log over
        wait_until(lambda: checkpointer.last is not None and 0 < checkpointer.last[1] < 50, 10,
                   "the log to start over")
    finally:
        if checkpointer is not None:
            checkpointer.close()
        engine.close()


def test_past_the_safety_net_a_commit_checkpoints_after_all(tmp_path: Path) -> None:
    """Writes without a pause never leave the thread a log it can copy whole: the net bounds it."""
    path = tmp_path / "store.sqlite"
    frames = frames_after_writes(open_engine(f"sqlite:///{path}"), path, starts=5000)
    assert SAFETY_NET_PAGES < frames < SAFETY_NET_PAGES + AUTOCHECKPOINT_PAGES


def test_sqlites_default_checkpoints_inside_the_commits(tmp_path: Path) -> None:
    """The contrast: the same writes on eventsourcing's own factory (SQLite's default) never let
    the log grow far past 1,000 pages, because a commit checkpointed: the measure can tell."""
    path = tmp_path / "store.sqlite"
    plain = WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)})
    assert frames_after_writes(plain, path) < 2 * AUTOCHECKPOINT_PAGES


def test_the_store_keeps_its_log_short_while_open(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    engine = open_engine(f"sqlite:///{path}")
    try:
        checkpointer = engine.factory.checkpointer  # type: ignore[attr-defined]
        write_pages(engine)
        wait_until(lambda: copied_whole(checkpointer), 10, "the store's checkpointer to copy the log")
        engine.start_workflow(DEFINITION, {"blob": "after"})
        assert engine.workflow_state(engine.start_workflow(DEFINITION, {"blob": "read"})).status == "running"
    finally:
        engine.close()
    assert not [t for t in threading.enumerate() if t.name == "stepflow-wal-checkpoints"]
    assert not Path(f"{path}-wal").exists()  # the last connection closed: everything is in the file


def test_views_and_the_log_reader_work_on_the_store(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'store.sqlite'}?synchronous=normal")
    try:
        workflow_id = engine.start_workflow(DEFINITION, {"blob": "v"})
        runner = ProjectionRunner(engine)
        try:
            assert runner.run_once() >= 2
            assert runner.store.path == str(tmp_path / "store.sqlite")  # type: ignore[attr-defined]  not :memory:
        finally:
            runner.close()
        assert engine.workflow_state(workflow_id).status == "running"
    finally:
        engine.close()


def test_a_store_dropped_without_close_stops_its_thread(tmp_path: Path) -> None:
    def threads() -> int:
        return sum(t.name == "stepflow-wal-checkpoints" for t in threading.enumerate())

    before = threads()
    engine = open_engine(f"sqlite:///{tmp_path / 'store.sqlite'}")
    engine.start_workflow(DEFINITION, {"blob": "dropped"})
    assert threads() == before + 1
    del engine
    gc.collect()
    wait_until(lambda: threads() == before, 5, "the thread of a dropped store to stop")
