"""Running the views: rebuild equals live, tracking, concurrent runners, waiting, pagination, workers."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest
from test_projections_views import INGEST, dump, engine_fixture, play_story, runner_fixture  # noqa: F401

from stepflow.engine import commands as cmd
from stepflow.engine.application import WorkflowEngine
from stepflow.projections import (
    ProjectionRunner,
    WorkerSeen,
    WorkersView,
    queries,
    run_projections_once,
)
from stepflow.projections.queries import BadCursor, NotCaughtUp
from stepflow.projections.sqlite import SQLiteViewStore


def test_rebuild_equals_the_live_view_row_for_row(engine: WorkflowEngine, runner: ProjectionRunner) -> None:
    # live: the views follow every command, as they would in a backend
    play_story(engine, after=lambda _: runner.run_once())
    live = dump(runner.store)
    assert live["sf_jobs"] and live["sf_job_type_stats"]
    progress: list[tuple[int, int]] = []
    read = runner.rebuild(on_progress=lambda done, total: progress.append((done, total)), batch_size=7)
    assert read == engine.max_notification_id()
    assert progress[-1] == (read, read) and len(progress) == -(-read // 7)
    assert dump(runner.store) == live
    # one view alone
    runner.rebuild(["job_stats"])
    assert dump(runner.store) == live
    with pytest.raises(KeyError):
        runner.rebuild(["nope"])


def test_tracking_position_moves_with_each_batch(engine: WorkflowEngine, runner: ProjectionRunner) -> None:
    views = ("workflows", "job_stats", "definition_stats", "worker_orders")
    assert runner.positions() == dict.fromkeys(views, 0)
    engine.start_workflow(INGEST)
    assert runner.run_once() == 3  # its number, its start, its first job
    assert runner.positions() == dict.fromkeys(views, 3)
    assert runner.run_once() == 0
    assert run_projections_once(engine, runner.store) == 0


def test_a_failing_batch_writes_nothing_and_is_retried(engine: WorkflowEngine, runner: ProjectionRunner,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    workflow_id = engine.start_workflow(INGEST)
    projection = runner.projections[0]
    original = projection.apply

    def broken(tx, batch, position=None):  # type: ignore[no-untyped-def]
        original(tx, batch, position)
        raise RuntimeError("crash after writing, before commit")

    monkeypatch.setattr(projection, "apply", broken)
    with pytest.raises(RuntimeError):
        runner.run_once()
    assert runner.positions()["workflows"] == 0
    assert queries.get_workflow(runner.store, workflow_id) is None
    monkeypatch.setattr(projection, "apply", original)
    runner.run_once()
    assert queries.get_workflow(runner.store, workflow_id) is not None


def test_a_batch_is_one_transaction_for_every_view(engine: WorkflowEngine, runner: ProjectionRunner,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # the views share the batch's transaction (one write lock a batch): the last view failing
    # takes back what the others wrote, positions in the store and in memory alike
    workflow_id = engine.start_workflow(INGEST)
    last = runner.projections[-1]
    monkeypatch.setattr(last, "apply", lambda tx, batch, position=None: (_ for _ in ()).throw(RuntimeError("late")))
    with pytest.raises(RuntimeError):
        runner.run_once()
    assert runner.positions() == dict.fromkeys(runner.names, 0)
    assert {name: f.position for name, f in runner.followers.items()} == dict.fromkeys(runner.names, 0)
    assert queries.get_workflow(runner.store, workflow_id) is None
    monkeypatch.undo()
    runner.run_once()
    assert runner.positions() == dict.fromkeys(runner.names, engine.max_notification_id())
    assert queries.job_stats(runner.store)[0].submitted == 1  # applied once


def test_each_pass_reports_where_every_view_is(engine: WorkflowEngine, runner: ProjectionRunner) -> None:
    reports: list[int] = []
    runner.on_pass(reports.append)
    engine.start_workflow(INGEST)
    runner.run_once()
    runner.run_once()  # nothing new: reported all the same (a waiter may have come since)
    end = engine.max_notification_id()
    assert reports == [end, end]
    other = ProjectionRunner(engine, SQLiteViewStore(runner.store.path))  # type: ignore[attr-defined]
    other.store.reset(other.projections[0])  # rewound elsewhere: the next pass says so, then catches up
    other.close()
    runner.run_once(until=0)
    assert reports[-1] == 0


def test_two_runners_on_one_view_never_apply_twice(engine: WorkflowEngine, tmp_path: Path) -> None:
    for _ in range(30):
        engine.start_workflow(INGEST)
    path = str(tmp_path / "store.sqlite")
    runners = [ProjectionRunner(engine, SQLiteViewStore(path), batch_size=5) for _ in range(2)]
    threads = [threading.Thread(target=r.run_once) for r in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = queries.job_stats(runners[0].store)
    assert stats[0].submitted == 30
    assert len(queries.list_workflows(runners[0].store, limit=100).items) == 30
    for r in runners:
        r.close()


def test_a_runner_overtaken_mid_pass_reloads_and_applies_nothing_twice(engine: WorkflowEngine,
                                                                      tmp_path: Path) -> None:
    for _ in range(10):
        engine.start_workflow(INGEST)
    end = engine.max_notification_id()
    path = str(tmp_path / "store.sqlite")
    slow, fast = (ProjectionRunner(engine, SQLiteViewStore(path), batch_size=4) for _ in range(2))
    overtook: list[int] = []

    def overtake(done: int, target: int) -> None:  # after slow's first batch, fast does the rest
        if not overtook:
            overtook.append(fast.run_once())

    slow.run_once(on_progress=overtake)
    assert overtook[0] == end - 4
    assert slow.positions() == dict.fromkeys(slow.names, end)
    assert {name: f.position for name, f in slow.followers.items()} == dict.fromkeys(slow.names, end)
    assert queries.job_stats(slow.store)[0].submitted == 10
    assert len(queries.list_workflows(slow.store, limit=100).items) == 10
    for r in (slow, fast):
        r.close()


def test_a_view_rewound_elsewhere_is_caught_up_at_the_next_pass(engine: WorkflowEngine,
                                                                runner: ProjectionRunner) -> None:
    workflow_id = engine.start_workflow(INGEST)
    runner.run_once()
    # an interrupted `stepflow rebuild` in another process: the view is empty, at 0
    other = ProjectionRunner(engine, SQLiteViewStore(runner.store.path))  # type: ignore[attr-defined]
    other.store.reset(other.projections[0])
    other.close()
    assert queries.get_workflow(runner.store, workflow_id) is None
    assert runner.run_once() == engine.max_notification_id()  # nothing new in the log, yet
    assert runner.positions()["workflows"] == engine.max_notification_id()
    assert queries.get_workflow(runner.store, workflow_id) is not None


def test_follow_in_a_thread_and_wait_for_a_position(engine: WorkflowEngine) -> None:
    runner = ProjectionRunner(engine, poll_interval=5.0)
    runner.start()
    try:
        workflow_id = engine.start_workflow(INGEST)
        position = engine.max_notification_id()
        started = time.monotonic()
        assert runner.wait(position, timeout=5)  # wake() makes it run before the 5 s poll
        assert time.monotonic() - started < 2
        detail = queries.get_workflow(runner.store, workflow_id, wait_for=position)
        assert detail is not None and detail.workflow.status == "running"
    finally:
        runner.close()


def test_under_load_passes_are_paced_and_a_waiting_reader_hurries_them(engine: WorkflowEngine) -> None:
    # a pass that found events is followed by the next no sooner than `pass_every` after it
    # began, however many commits wake the runner meanwhile; `hurry` (a reader waiting) ends
    # the pause at once
    runner = ProjectionRunner(engine, poll_interval=3600, pass_every=3600)
    runner.start()
    try:
        engine.start_workflow(INGEST)
        runner.wake()
        assert runner.store.wait(runner.names, engine.max_notification_id(), timeout=5)  # the idle runner passes at once
        for _ in range(5):  # commits under load, each waking the runner
            engine.start_workflow(INGEST)
            runner.wake()
        assert not runner.store.wait(runner.names, engine.max_notification_id(), timeout=0.3)  # paused
        started = time.monotonic()
        assert runner.wait(engine.max_notification_id(), timeout=5)  # hurries
        assert time.monotonic() - started < 2
    finally:
        runner.close()


def test_a_query_waits_for_the_view_or_times_out(engine: WorkflowEngine, runner: ProjectionRunner) -> None:
    workflow_id = engine.start_workflow(INGEST)
    with pytest.raises(NotCaughtUp):
        queries.list_workflows(runner.store, wait_for=engine.max_notification_id(), timeout=0.05)
    later = threading.Timer(0.1, runner.run_once)
    later.start()
    page = queries.list_workflows(runner.store, wait_for=engine.max_notification_id(), timeout=5)
    assert [w.workflow_id for w in page.items] == [str(workflow_id)]
    later.join(5)  # it goes on with the other views: done before the store closes
    assert not later.is_alive()


def test_pagination_is_stable_under_concurrent_inserts(engine: WorkflowEngine, runner: ProjectionRunner) -> None:
    before = [engine.start_workflow(INGEST, labels=["batch"]) for _ in range(23)]
    runner.run_once()
    stop = threading.Event()
    inserted = threading.Semaphore(0)  # one release per workflow started and projected

    def insert() -> None:  # another client starting workflows while we page
        while not stop.is_set():
            engine.start_workflow(INGEST, labels=["batch"])
            runner.run_once()
            inserted.release()

    inserter = threading.Thread(target=insert)
    inserter.start()
    try:
        for kwargs in ({}, {"label": "batch"}, {"status": "running"}):
            seen: list[str] = []
            cursor = None
            while True:
                page = queries.list_workflows(runner.store, limit=4, cursor=cursor, **kwargs)  # type: ignore[arg-type]
                seen += [w.workflow_id for w in page.items]
                assert inserted.acquire(timeout=10)  # a new workflow lands between every two pages
                cursor = page.next_cursor
                if cursor is None:
                    break
            assert len(seen) == len(set(seen))  # nothing twice
            assert [str(i) for i in reversed(before)] == [s for s in seen if UUID(s) in set(before)]
    finally:
        stop.set()
        inserter.join()
    with pytest.raises(BadCursor):
        queries.list_workflows(runner.store, cursor="x")


def test_oldest_first_pages(engine: WorkflowEngine, runner: ProjectionRunner) -> None:
    ids = [str(engine.start_workflow(INGEST)) for _ in range(5)]
    runner.run_once()
    first = queries.list_workflows(runner.store, limit=3, oldest_first=True)
    second = queries.list_workflows(runner.store, limit=3, oldest_first=True, cursor=first.next_cursor)
    assert [w.workflow_id for w in first.items + second.items] == ids
    assert second.next_cursor is None


def test_a_changed_view_schema_is_rebuilt(engine: WorkflowEngine, runner: ProjectionRunner) -> None:
    workflow_id = engine.start_workflow(INGEST)
    runner.run_once()
    projection = runner.projections[0]
    type(projection).schema_version += 1
    try:
        again = ProjectionRunner(engine, runner.store)
        assert again.positions()["workflows"] == 0
        again.run_once()
        assert queries.get_workflow(runner.store, workflow_id) is not None
    finally:
        type(projection).schema_version -= 1


def test_workers_view(runner: ProjectionRunner) -> None:
    workers = WorkersView(runner.store)
    t0 = datetime(2024, 5, 1, 12, tzinfo=UTC)
    workers.record_heartbeat("i-1", "encode", at=t0, label="Encoder", version="1.2.0", sdk_version="2.0",
                             direct_queue="direct_messaging_i-1")
    workers.record_heartbeat("i-2", "probe", at=t0)
    workers.record_status("i-1", "Busy", at=t0 + timedelta(seconds=60), job_id="job-9")
    workers.record([WorkerSeen(instance_id="i-3", at=t0, job_type="encode"),
                    WorkerSeen(instance_id="i-3", at=t0 + timedelta(seconds=10), terminated=True)])
    now = t0 + timedelta(seconds=100)
    found = {w.instance_id: w for w in queries.list_workers(runner.store, now=now)}
    assert (found["i-1"].status, found["i-1"].activity, found["i-1"].current_job) == ("alive", "Busy", "job-9")
    assert (found["i-1"].label, found["i-1"].version, found["i-1"].job_type) == ("Encoder", "1.2.0", "encode")
    assert found["i-1"].first_seen == t0 and found["i-1"].last_seen == t0 + timedelta(seconds=60)
    assert found["i-2"].status == "gone"  # silent for 100 s > 90 s
    assert found["i-3"].status == "terminated" and found["i-3"].terminated_at is not None
    alive = queries.list_workers(runner.store, now=now, include_gone=False)
    assert [w.instance_id for w in alive] == ["i-1"]
    assert [w.instance_id for w in queries.list_workers(runner.store, now=now, job_type="encode")] == ["i-1", "i-3"]
    workers.record_heartbeat("i-2", "probe", at=now)  # back again
    assert {w.instance_id for w in queries.list_workers(runner.store, now=now, include_gone=False)} == {"i-1", "i-2"}
    assert workers.prune(older_than=t0 + timedelta(seconds=30)) == 1  # i-3
    assert len(queries.list_workers(runner.store, now=now)) == 2


def test_views_on_a_memory_engine() -> None:
    engine = WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    workflow_id = engine.start_workflow(INGEST)
    runner = ProjectionRunner(engine)
    runner.run_once()
    job = engine.workflow_state(workflow_id).steps["fetch"].jobs[0]
    engine.command(cmd.RecordCompleted(workflow_id=workflow_id, job_id=job))
    runner.run_once()
    detail = queries.get_workflow(runner.store, workflow_id)
    assert detail is not None and detail.workflow.status == "completed"
    runner.close()


def test_queries_do_not_wait_for_a_batch_being_written(engine: WorkflowEngine, runner: ProjectionRunner) -> None:
    workflow_id = engine.start_workflow(INGEST)
    runner.run_once()
    writing, done = threading.Event(), threading.Event()

    def long_batch() -> None:
        with runner.store.write() as tx:
            tx.execute("UPDATE sf_workflows SET status = 'paused'")
            writing.set()
            done.wait(5)

    writer = threading.Thread(target=long_batch)
    writer.start()
    writing.wait(5)
    started = time.monotonic()
    detail = queries.get_workflow(runner.store, workflow_id)  # the last commit, at once
    assert time.monotonic() - started < 1
    assert detail is not None and detail.workflow.status == "running"
    done.set()
    writer.join()
    assert queries.get_workflow(runner.store, workflow_id).workflow.status == "paused"  # type: ignore[union-attr]
