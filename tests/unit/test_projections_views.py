"""The workflow, step, job and job-stats views after a scripted sequence of events.

`play_story` drives real engine commands through every kind of event (retries, timeouts,
operator retry while paused, pause/resume, stop, unroutable, delete, a worker's stop) and
is reused by the rebuild, replay and PostgreSQL tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from stepflow.engine import commands as cmd
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.definitions import WorkflowDefinition, build_definition
from stepflow.projections import ProjectionRunner, queries
from stepflow.projections.store import ViewStore

MEDIA = build_definition({
    "identifier": "media", "version": "2.1.0", "label": "Media ingest", "tags": ["video"],
    "parameters": [{"id": "sizes", "type": "array_of_strings", "default": ["a", "b", "c"]},
                   {"id": "thumbs", "type": "boolean", "default": False}],
    "steps": [
        {"id": "probe", "job_type": "probe", "timeout_s": 60},
        {"id": "encode", "job_type": "encode", "parents": ["probe"], "fan_out": "{workflow.sizes}",
         "parameters": {"size": "{item}"}, "retry": {"max_attempts": 2, "backoff_s": 0}, "timeout_s": 120},
        {"id": "thumbs", "job_type": "thumbs", "parents": ["probe"], "condition": "{workflow.thumbs}"},
        {"id": "publish", "job_type": "publish", "parents": ["encode", "thumbs"]},
    ],
})
INGEST = build_definition({"identifier": "ingest", "steps": [{"id": "fetch", "job_type": "fetch"}]})

Hook = Callable[[UUID], None]


class Story:
    """Commands against an engine; `after(workflow_id)` is called after each one."""

    def __init__(self, engine: WorkflowEngine, after: Hook | None = None) -> None:
        self.engine = engine
        self.after = after or (lambda _: None)
        self.ids: dict[str, UUID] = {}
        self._n = 0

    def start(self, name: str, definition: WorkflowDefinition, **params: Any) -> UUID:
        workflow_id = self.engine.start_workflow(definition, params, labels=[name, "story"], actor="tester")
        self.ids[name] = workflow_id
        self.after(workflow_id)
        return workflow_id

    def job(self, name: str, step: str, index: int = 0) -> str:
        return self.engine.workflow_state(self.ids[name]).steps[step].jobs[index]

    def do(self, name: str, command: type[cmd.Command], **fields: Any) -> None:
        self._n += 1
        self.engine.command(command(workflow_id=self.ids[name], cause=f"msg-{self._n}", **fields))
        self.after(self.ids[name])

    def on_job(self, name: str, step: str, command: type[cmd.Command], index: int = 0, **fields: Any) -> None:
        self.do(name, command, job_id=self.job(name, step, index), **fields)


def play_story(engine: WorkflowEngine, after: Hook | None = None) -> dict[str, UUID]:
    s = Story(engine, after)
    # done: progress, completion, an error retried, a timeout retried, a skipped step
    s.start("done", MEDIA)
    s.on_job("done", "probe", cmd.RecordProgress, progression=30, worker="w-1", message="reading")
    s.on_job("done", "probe", cmd.RecordProgress, progression=60, worker="w-1")
    s.on_job("done", "probe", cmd.RecordCompleted, worker="w-1", execution_duration=2.0, outputs={"ok": True})
    s.on_job("done", "encode", cmd.RecordError, 0, message="disk full", worker="w-2", execution_duration=1.0)
    s.on_job("done", "encode", cmd.RecordProgress, 1, progression=50, worker="w-3")
    s.on_job("done", "encode", cmd.RecordTimeout, 1)
    s.on_job("done", "encode", cmd.RecordCompleted, 2, execution_duration=4.0, worker="w-3")
    s.on_job("done", "encode", cmd.RecordCompleted, 0, execution_duration=8.0, worker="w-2")
    s.on_job("done", "encode", cmd.RecordCompleted, 1, execution_duration=16.0, worker="w-3")
    s.on_job("done", "publish", cmd.RecordCompleted, execution_duration=1.0)
    # failed, then retried by an operator, then completed
    s.start("retried", INGEST)
    s.on_job("retried", "fetch", cmd.RecordError, message="404", kind="http")
    s.on_job("retried", "fetch", cmd.RetryJob, actor="alice")
    s.on_job("retried", "fetch", cmd.RecordCompleted, execution_duration=3.0)
    # paused, errored while paused, retried while paused, resumed, then stopped
    s.start("stopped", MEDIA, sizes=["x"])
    s.do("stopped", cmd.PauseWorkflow, actor="bob")
    s.on_job("stopped", "probe", cmd.RecordError, message="crash")
    s.on_job("stopped", "probe", cmd.RetryJob, actor="bob")
    s.do("stopped", cmd.ResumeWorkflow, actor="bob")
    s.on_job("stopped", "probe", cmd.RecordProgress, progression=10)
    s.do("stopped", cmd.StopWorkflow, reason="enough", actor="bob")
    # unroutable, then deleted
    s.start("deleted", INGEST)
    s.on_job("deleted", "fetch", cmd.RecordUnroutable, job_type="fetch")
    s.do("deleted", cmd.DeleteWorkflow, actor="carol")
    # stopped by its worker; and one still running
    s.start("worker_stopped", INGEST)
    s.on_job("worker_stopped", "fetch", cmd.RecordStopped, reason="worker shutdown")
    s.start("running", MEDIA, thumbs=True)
    s.on_job("running", "probe", cmd.RecordCompleted)
    s.on_job("running", "thumbs", cmd.RecordProgress, progression=70, worker="w-9")
    return s.ids


@pytest.fixture(name="engine")
def engine_fixture(tmp_path: Path) -> Iterator[WorkflowEngine]:
    engine = WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                                 "SQLITE_DBNAME": str(tmp_path / "store.sqlite")})
    yield engine
    engine.close()


@pytest.fixture(name="runner")
def runner_fixture(engine: WorkflowEngine) -> Iterator[ProjectionRunner]:
    runner = ProjectionRunner(engine)
    yield runner
    runner.close()


@pytest.fixture
def story(engine: WorkflowEngine, runner: ProjectionRunner) -> dict[str, UUID]:
    ids = play_story(engine)
    runner.run_once()
    return ids


def dump(store: ViewStore, tables: tuple[str, ...] = ("sf_workflows", "sf_workflow_labels", "sf_steps",
                                                        "sf_jobs", "sf_job_type_stats", "sf_job_stats_open",
                                                        "sf_definition_stats", "sf_definition_durations",
                                                        "sf_definition_runs", "sf_definition_open_steps",
                                                        "sf_definition_open_jobs", "sf_worker_orders")
         ) -> dict[str, list[tuple[Any, ...]]]:
    with store.read() as tx:
        return {t: sorted(tx.query(f"SELECT * FROM {t}"), key=repr) for t in tables}


def test_workflow_view_after_the_story(story: dict[str, UUID], runner: ProjectionRunner) -> None:
    store = runner.store
    done = queries.get_workflow(store, story["done"])
    assert done is not None
    w = done.workflow
    assert (w.status, w.progress, w.steps_done, w.steps_total, w.current_steps) == ("completed", 100.0, 4, 4, ())
    assert (w.definition, w.definition_version, w.title) == ("media", "2.1.0", "Media ingest")
    assert w.labels == ("done", "story") and w.tags == ("video",)
    assert w.parameters == {"sizes": ["a", "b", "c"], "thumbs": False}
    assert w.started_by == "tester" and w.ended_at is not None and w.duration_s is not None

    steps = {s.step_id: s for s in done.steps}
    assert [s.step_id for s in done.steps] == ["probe", "encode", "thumbs", "publish"]
    assert steps["thumbs"].status == "skipped" and "false" in (steps["thumbs"].reason or "")
    assert steps["encode"].status == "completed"
    assert steps["encode"].jobs_total == 5
    assert steps["encode"].job_counts == {"completed": 3, "retrying": 2}
    assert steps["probe"].job_counts == {"completed": 1}

    jobs = [j for j in done.jobs if j.step_id == "encode"]
    assert [(j.index, j.attempt, j.status) for j in jobs] == [
        (0, 1, "retrying"), (0, 2, "completed"), (1, 1, "retrying"), (1, 2, "completed"), (2, 1, "completed")]
    first = jobs[0]
    assert (first.error, first.worker, first.execution_duration) == ("disk full", "w-2", 1.0)
    assert first.next_job_id == jobs[1].job_id
    timed_out = jobs[2]
    assert (timed_out.error, timed_out.error_kind, timed_out.progression) == ("no response within 120s", "timeout", 50)
    probe = next(j for j in done.jobs if j.step_id == "probe")
    assert (probe.status, probe.progression, probe.worker, probe.message) == ("completed", 100, "w-1", None)
    assert probe.duration_s == 2.0 and probe.wait_s is not None


def test_operator_retry_pause_stop_delete(story: dict[str, UUID], runner: ProjectionRunner) -> None:
    store = runner.store
    retried = queries.get_workflow(store, story["retried"])
    assert retried is not None and retried.workflow.status == "completed" and retried.workflow.reason is None
    assert [(j.attempt, j.status) for j in retried.jobs] == [(1, "retrying"), (2, "completed")]
    assert retried.steps[0].job_counts == {"retrying": 1, "completed": 1}

    stopped = queries.get_workflow(store, story["stopped"])
    assert stopped is not None
    assert (stopped.workflow.status, stopped.workflow.reason) == ("stopped", "enough")
    assert {s.step_id: s.status for s in stopped.steps} == {
        "probe": "stopped", "encode": "stopped", "thumbs": "stopped", "publish": "stopped"}
    assert [(j.attempt, j.status, j.error) for j in stopped.jobs] == [
        (1, "retrying", "crash"), (2, "stopped", "enough")]

    deleted = queries.get_workflow(store, story["deleted"])
    assert deleted is not None and deleted.workflow.status == "deleted"
    assert deleted.jobs[0].status == "unroutable" and deleted.jobs[0].error_kind == "unroutable"

    worker_stopped = queries.get_workflow(store, story["worker_stopped"])
    assert worker_stopped is not None and worker_stopped.workflow.status == "error"
    assert worker_stopped.jobs[0].error == "worker shutdown"

    running = queries.get_workflow(store, story["running"])
    assert running is not None
    assert running.workflow.status == "running" and running.workflow.current_steps == ("encode", "thumbs")
    assert running.workflow.progress == 25.0


def test_listing_filters(story: dict[str, UUID], runner: ProjectionRunner) -> None:
    store = runner.store
    page = queries.list_workflows(store)
    assert [w.workflow_id for w in page.items] == [
        str(story[n]) for n in ("running", "worker_stopped", "stopped", "retried", "done")]  # deleted hidden
    assert page.next_cursor is None
    assert len(queries.list_workflows(store, include_deleted=True).items) == 6
    assert [w.workflow_id for w in queries.list_workflows(store, status="deleted").items] == [str(story["deleted"])]
    completed = queries.list_workflows(store, status=["completed", "stopped"], oldest_first=True)
    assert [w.workflow_id for w in completed.items] == [str(story[n]) for n in ("done", "retried", "stopped")]
    assert {w.workflow_id for w in queries.list_workflows(store, definition="media").items} == {
        str(story[n]) for n in ("done", "stopped", "running")}
    assert [w.workflow_id for w in queries.list_workflows(store, label="retried").items] == [str(story["retried"])]
    assert len(queries.list_workflows(store, label="video").items) == 3  # definition tag
    assert len(queries.list_workflows(store, label="story", status="completed").items) == 2
    first = queries.get_workflow(store, story["done"])
    last = queries.get_workflow(store, story["running"])
    assert first is not None and last is not None
    window = queries.list_workflows(store, started_after=first.workflow.started_at,
                                    started_before=last.workflow.started_at)
    assert str(story["running"]) not in [w.workflow_id for w in window.items]
    assert str(story["done"]) in [w.workflow_id for w in window.items]


def test_jobs_by_status_and_type(story: dict[str, UUID], runner: ProjectionRunner) -> None:
    store = runner.store
    retrying = queries.list_jobs(store, status="retrying")
    assert len(retrying.items) == 4 and all(j.status == "retrying" for j in retrying.items)
    encodes = queries.list_jobs(store, job_type="encode", limit=2)
    assert len(encodes.items) == 2 and encodes.next_cursor is not None
    rest = queries.list_jobs(store, job_type="encode", cursor=encodes.next_cursor, limit=100)
    assert len(encodes.items) + len(rest.items) == 5 + 3  # five in "done", three in "running"
    assert rest.next_cursor is None
    seqs = [j.seq for j in encodes.items + rest.items]
    assert seqs == sorted(seqs, reverse=True)
    probe = queries.list_jobs(store, workflow_id=story["done"], job_type="probe").items[0]
    assert queries.get_job(store, probe.job_id) == probe
    assert queries.get_job(store, "nope") is None


def test_job_type_statistics(story: dict[str, UUID], runner: ProjectionRunner) -> None:
    stats = {s.job_type: s for s in queries.job_stats(runner.store)}
    encode = stats["encode"]
    assert (encode.submitted, encode.retries, encode.completed, encode.errored, encode.timed_out) == (8, 2, 3, 1, 1)
    assert encode.stopped == 0 and encode.ended == 5  # "running" has three in flight
    assert encode.success_rate == pytest.approx(3 / 5)
    assert encode.duration_mean_s == pytest.approx((4 + 8 + 16) / 3)
    assert encode.duration_p50_s == pytest.approx(8.0, rel=0.05)
    assert encode.duration_p95_s == pytest.approx(16.0, rel=0.05)
    assert encode.duration_max_s == 16.0
    fetch = stats["fetch"]
    assert (fetch.submitted, fetch.completed, fetch.errored, fetch.unroutable, fetch.stopped) == (4, 1, 1, 1, 1)
    probe = stats["probe"]  # "stopped": one errored attempt, one stopped with its workflow
    assert (probe.submitted, probe.completed, probe.errored, probe.stopped) == (4, 2, 1, 1)
    assert stats["thumbs"].completed == 0 and stats["thumbs"].ended == 0
    with runner.store.read() as tx:  # only jobs in flight stay in the index
        open_jobs = tx.query("SELECT job_type FROM sf_job_stats_open ORDER BY job_type")
    assert open_jobs == [("encode",), ("encode",), ("encode",), ("thumbs",)]
    assert [s.job_type for s in queries.job_stats(runner.store, job_type="fetch")] == ["fetch"]


@pytest.mark.parametrize("batch_size", [1, 3, 17])
def test_batches_do_not_change_the_result(engine: WorkflowEngine, runner: ProjectionRunner,
                                          tmp_path: Path, batch_size: int) -> None:
    play_story(engine)
    runner.run_once()
    from stepflow.projections.sqlite import SQLiteViewStore

    other = SQLiteViewStore(str(tmp_path / "other.sqlite"))
    small = ProjectionRunner(engine, other, batch_size=batch_size)
    try:
        small.run_once()
        assert dump(other) == dump(runner.store)
    finally:
        small.close()


def test_events_of_unknown_workflows_are_ignored(engine: WorkflowEngine, runner: ProjectionRunner) -> None:
    ids = play_story(engine)
    # A view that starts mid-log (its start events are not in its batch) keeps going.
    runner.store.reset(runner.projections[0])
    with runner.store.write() as tx:
        tx.execute("UPDATE sf_tracking SET position = 3 WHERE view = 'workflows'")
    runner.run_once()
    assert queries.get_workflow(runner.store, ids["done"]) is None
    assert queries.get_workflow(runner.store, ids["running"]) is not None
