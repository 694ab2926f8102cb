"""The `workflows` projection: the workflow, step and job views, kept in one transaction.

Three read models, one projection (one tracking row): a step's job counts and a workflow's
progress are derived from job transitions, and events name a job without its step, so the
three are computed together and can never disagree. Tables: `sf_workflows`,
`sf_workflow_labels` (labels and definition tags, for the label filter), `sf_steps`, `sf_jobs`.

The rules mirror `stepflow.engine.state.evolve` (a test replays histories through both and
compares); what the views add is timing (step start/end, job update times) and counters.

A batch is applied in three moves, which is what makes a rebuild fast:
1. collect the keys the batch touches that it does not create, and load those rows
   (`IN (...)` lookups, plus the active jobs of workflows being stopped or deleted);
2. apply every event to the rows in memory, one small handler per event type;
3. write the changed rows back with one `executemany` upsert per table.
The result does not depend on how the log is cut into batches (tested: batch sizes 1..N).

Rows stay cached between batches (`_Cache`), which spares step 1 for workflows in progress.
The cache is only used while the view is at the position this projection committed last:
the projection is a deterministic function of the log, so rows at that position are the same
whoever wrote them, and any other writer would have moved the position. A failed batch, a
moved position or an oversized cache empties it; a finished workflow leaves it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import msgspec

from stepflow.engine import events as ev
from stepflow.engine.failures import Halt, JobEnding, halt, job_failure
from stepflow.engine.graph import topological_order
from stepflow.engine.statuses import JOB_HALTABLE, STEP_DONE, STEP_OPEN, WORKFLOW_FINAL
from stepflow.projections.rows import (
    JOB_COUNT_FIELD,
    JOBS,
    LABELS,
    STEPS,
    WORKFLOWS,
    JobRow,
    StepRow,
    WorkflowRow,
)
from stepflow.projections.store import Table, Tx, fetch_in

_json = msgspec.json.Encoder()
HALTABLE = tuple(sorted(JOB_HALTABLE))  # SQL parameters, in a stable order
JOB_REFERENCES = (ev.JobProgressed, ev.JobCompleted, ev.JobErrored, ev.JobUnroutable, ev.JobTimedOut,
                  ev.JobStopped, ev.JobRetryRequested, ev.JobRetryScheduled)


def dumps(value: Any) -> str:
    return _json.encode(value).decode()


CACHE_JOBS = 100_000  # about 40 MB of rows


class _Cache:
    """Rows as of `position`: every step of a cached workflow, some of its jobs."""

    def __init__(self) -> None:
        self.position: int | None = None
        self.workflows: dict[str, WorkflowRow] = {}
        self.steps: dict[str, dict[str, StepRow]] = {}  # workflow id -> step id -> row
        self.jobs: dict[str, JobRow] = {}
        self.jobs_of: dict[str, list[JobRow]] = {}  # workflow id -> its cached jobs

    def clear(self) -> None:
        self.position = None
        for rows in (self.workflows, self.steps, self.jobs, self.jobs_of):
            rows.clear()

    def evict(self, workflow_id: str) -> None:
        self.workflows.pop(workflow_id, None)
        self.steps.pop(workflow_id, None)
        for job in self.jobs_of.pop(workflow_id, ()):
            self.jobs.pop(job.job_id, None)


class WorkflowsProjection:
    name: ClassVar[str] = "workflows"
    schema_version: ClassVar[int] = 2
    tables: ClassVar[tuple[Table, ...]] = (WORKFLOWS, LABELS, STEPS, JOBS)

    def __init__(self) -> None:
        self._cache = _Cache()
        self._finished: list[str] = []

    def apply(self, tx: Tx, batch: Sequence[tuple[int, ev.Event]], position: int | None = None) -> None:
        """Apply a batch; `position` (where the view stands) lets cached rows be used."""
        if position is None or position != self._cache.position:
            self._cache.clear()
        self._finished = _Batch(tx, self._cache).run(batch)

    def committed(self, position: int) -> None:
        cache = self._cache
        for workflow_id in self._finished:
            cache.evict(workflow_id)
        if len(cache.jobs) > CACHE_JOBS:
            cache.clear()
        cache.position = position

    def forget(self) -> None:
        self._cache.clear()


class _Batch:
    def __init__(self, tx: Tx, cache: _Cache) -> None:
        self.tx = tx
        self.workflows = cache.workflows
        self.steps = cache.steps
        self.jobs = cache.jobs
        self.jobs_of = cache.jobs_of
        self.labels: list[tuple[str, int, str]] = []
        self.dirty_workflows: set[str] = set()
        self.dirty_steps: set[tuple[str, str]] = set()
        self.dirty_jobs: set[str] = set()

    def run(self, batch: Sequence[tuple[int, ev.Event]]) -> list[str]:
        """Apply and write the batch; return the workflows it finished."""
        ids = self._load(batch)
        handlers = _HANDLERS
        for (nid, event), workflow_id in zip(batch, ids):
            handler = handlers.get(type(event))
            if handler is not None:
                handler(self, event, nid, workflow_id)
        self._write()
        return [w for w in self.dirty_workflows if self.workflows[w].status in WORKFLOW_FINAL]

    # --- 1. load ---------------------------------------------------------------------

    def _load(self, batch: Sequence[tuple[int, ev.Event]]) -> list[str]:
        """Read the rows the batch needs and has neither cached nor creates; return its ids."""
        names: dict[Any, str] = {}
        ids: list[str] = []
        started: set[str] = set()
        workflow_ids: set[str] = set()
        submitted: set[str] = set()
        job_ids: set[str] = set()
        halted: set[str] = set()
        for _, event in batch:
            uuid = event.originator_id
            workflow_id = names.get(uuid)
            if workflow_id is None:
                workflow_id = names[uuid] = str(uuid)
            ids.append(workflow_id)
            kind = type(event)
            if kind is ev.WorkflowStarted:
                started.add(workflow_id)
                continue
            if kind is ev.JobSubmitted:
                submitted.add(event.job_id)  # type: ignore[attr-defined]
            elif kind in JOB_REFERENCES:
                job_id = event.job_id  # type: ignore[attr-defined]
                if job_id not in submitted and job_id not in self.jobs:
                    job_ids.add(job_id)
            elif kind is ev.WorkflowStopped or kind is ev.WorkflowDeleted:
                halted.add(workflow_id)
            elif kind not in _HANDLERS:
                continue
            if workflow_id not in self.workflows:
                workflow_ids.add(workflow_id)
        workflow_ids -= started
        halted -= started
        if workflow_ids:
            for row in fetch_in(self.tx, WORKFLOWS.select(), "workflow_id", workflow_ids):
                self.workflows[row[0]] = WorkflowRow(*row)
                self.steps[row[0]] = {}
            for row in fetch_in(self.tx, STEPS.select(), "workflow_id", workflow_ids):
                step = StepRow(*row)
                self.steps[step.workflow_id][step.step_id] = step
        for row in fetch_in(self.tx, JOBS.select(), "job_id", job_ids):
            self._add_job(JobRow(*row))
        if halted:
            marks = ", ".join("?" * len(HALTABLE))
            for row in fetch_in(self.tx, JOBS.select(), "workflow_id", halted,
                                f"AND status IN ({marks})", HALTABLE):
                if row[0] not in self.jobs:
                    self._add_job(JobRow(*row))
        return ids

    def _add_job(self, job: JobRow) -> None:
        self.jobs[job.job_id] = job
        self.jobs_of.setdefault(job.workflow_id, []).append(job)

    # --- 3. write --------------------------------------------------------------------

    def _write(self) -> None:
        astuple = msgspec.structs.astuple
        workflows = [self.workflows[w] for w in self.dirty_workflows]
        for workflow in workflows:
            self._summarise(workflow)
        tx = self.tx
        tx.executemany(WORKFLOWS.upsert(), [astuple(w) for w in workflows])
        tx.executemany(LABELS.insert_ignore(), self.labels)
        tx.executemany(STEPS.upsert(), [astuple(self.steps[w][s]) for w, s in self.dirty_steps])
        tx.executemany(JOBS.upsert(), [astuple(self.jobs[j]) for j in self.dirty_jobs])

    def _summarise(self, workflow: WorkflowRow) -> None:
        steps = sorted(self.steps.get(workflow.workflow_id, {}).values(), key=lambda s: s.step_order)
        done = sum(1 for s in steps if s.status in STEP_DONE)
        workflow.steps_done = done
        workflow.current_steps = dumps([s.step_id for s in steps if s.status == "processing"])
        workflow.progress = round(100.0 * done / len(steps), 1) if steps else 0.0

    # --- 2. apply --------------------------------------------------------------------

    def _touch(self, event: ev.Event, workflow_id: str) -> tuple[WorkflowRow, float] | None:
        workflow = self.workflows.get(workflow_id)
        if workflow is None:
            return None  # a stream the view never saw start: nothing to attach the event to
        at = event.timestamp.timestamp()
        workflow.updated_at = at
        workflow.version = event.originator_version
        self.dirty_workflows.add(workflow_id)
        return workflow, at

    def _set_job(self, job: JobRow, status: str, at: float) -> None:
        if job.status != status:
            step = self.steps[job.workflow_id][job.step_id]
            old, new = JOB_COUNT_FIELD[job.status], JOB_COUNT_FIELD[status]
            setattr(step, old, getattr(step, old) - 1)
            setattr(step, new, getattr(step, new) + 1)
            step.updated_at = at
            self.dirty_steps.add((job.workflow_id, job.step_id))
            job.status = status
        job.updated_at = at
        self.dirty_jobs.add(job.job_id)

    def _set_step(self, workflow_id: str, step_id: str, status: str, at: float,
                  reason: str | None = None, ended: bool = True) -> None:
        step = self.steps[workflow_id][step_id]
        step.status = status
        step.reason = reason
        step.updated_at = at
        if ended:
            step.ended_at = at
        self.dirty_steps.add((workflow_id, step_id))

    def started(self, e: ev.WorkflowStarted, nid: int, wid: str) -> None:
        at = e.timestamp.timestamp()
        definition = e.definition
        self.workflows[wid] = WorkflowRow(
            wid, nid, definition.identifier, definition.version, definition.label, "running",
            dumps(list(e.labels)), dumps(list(definition.tags)), dumps(e.parameters),
            len(definition.steps), 0, "[]", 0.0, at, None, at, e.originator_version, e.actor, None,
        )
        self.dirty_workflows.add(wid)
        steps = self.steps[wid] = {}
        for order, step_id in enumerate(topological_order(definition)):
            job_type = definition.step(step_id).job_type
            steps[step_id] = StepRow(wid, step_id, order, job_type, "waiting", None,
                                     0, 0, 0, 0, 0, 0, 0, 0, 0, None, None, None)
            self.dirty_steps.add((wid, step_id))
        for label in dict.fromkeys((*e.labels, *definition.tags)):
            self.labels.append((label, nid, wid))

    def submitted(self, e: ev.JobSubmitted, nid: int, wid: str) -> None:
        touched = self._touch(e, wid)
        if touched is None:
            return
        workflow, at = touched
        self._add_job(JobRow(
            e.job_id, workflow.workflow_id, e.step_id, e.index, e.attempt, e.job_type, "queued", nid,
            e.priority, at, at + e.delay_s, None, None, at, 0, None, None, None, None, None, None,
        ))
        self.dirty_jobs.add(e.job_id)
        step = self.steps[workflow.workflow_id][e.step_id]
        step.jobs_total += 1
        step.n_queued += 1
        step.status = "processing"
        step.started_at = step.started_at or at
        step.updated_at = at
        self.dirty_steps.add((workflow.workflow_id, e.step_id))

    def _job_event(self, e: Any, wid: str) -> tuple[JobRow, float] | None:
        touched = self._touch(e, wid)
        job = self.jobs.get(e.job_id)
        if touched is None or job is None:
            return None
        return job, touched[1]

    def progressed(self, e: ev.JobProgressed, nid: int, wid: str) -> None:
        if found := self._job_event(e, wid):
            job, at = found
            self._set_job(job, "processing", at)
            job.progression = e.progression
            job.message = e.message
            job.started_at = job.started_at or at
            job.worker = e.worker or job.worker

    def completed(self, e: ev.JobCompleted, nid: int, wid: str) -> None:
        if found := self._job_event(e, wid):
            job, at = found
            self._set_job(job, "completed", at)
            job.progression = 100
            job.ended_at = at
            job.worker = e.worker or job.worker
            job.execution_duration = e.execution_duration

    def failed(self, e: JobEnding, nid: int, wid: str) -> None:
        if found := self._job_event(e, wid):
            job, at = found
            failure = job_failure(e)
            self._set_job(job, failure.status, at)
            job.error, job.error_kind, job.ended_at = failure.error, failure.kind, at
            if isinstance(e, ev.JobErrored):
                job.worker = e.worker or job.worker
                job.execution_duration = e.execution_duration

    def retry_requested(self, e: ev.JobRetryRequested, nid: int, wid: str) -> None:
        if found := self._job_event(e, wid):
            job, at = found
            self._set_job(job, "retry_requested", at)
            self._set_step(job.workflow_id, job.step_id, "processing", at, ended=False)
            self.steps[job.workflow_id][job.step_id].ended_at = None
            workflow = self.workflows[job.workflow_id]
            if workflow.status == "error":
                workflow.status, workflow.reason, workflow.ended_at = "running", None, None

    def retry_scheduled(self, e: ev.JobRetryScheduled, nid: int, wid: str) -> None:
        if found := self._job_event(e, wid):
            job, at = found
            self._set_job(job, "retrying", at)
            job.next_job_id = e.next_job_id

    def step_completed(self, e: ev.StepCompleted, nid: int, wid: str) -> None:
        if touched := self._touch(e, wid):
            self._set_step(touched[0].workflow_id, e.step_id, "completed", touched[1])

    def step_skipped(self, e: ev.StepSkipped, nid: int, wid: str) -> None:
        if touched := self._touch(e, wid):
            self._set_step(touched[0].workflow_id, e.step_id, "skipped", touched[1], e.reason)

    def step_failed(self, e: ev.StepFailed, nid: int, wid: str) -> None:
        if touched := self._touch(e, wid):
            self._set_step(touched[0].workflow_id, e.step_id, "error", touched[1], e.reason)

    def _status(self, e: ev.Event, wid: str, status: str, reason: str | None = None,
                ended: bool = False) -> None:
        if touched := self._touch(e, wid):
            workflow, at = touched
            workflow.status = status
            if reason is not None:
                workflow.reason = reason
            if ended:
                workflow.ended_at = at

    def paused(self, e: ev.WorkflowPaused, nid: int, wid: str) -> None:
        self._status(e, wid, "paused")

    def resumed(self, e: ev.WorkflowResumed, nid: int, wid: str) -> None:
        self._status(e, wid, "running")

    def completed_workflow(self, e: ev.WorkflowCompleted, nid: int, wid: str) -> None:
        self._status(e, wid, "completed", ended=True)

    def failed_workflow(self, e: ev.WorkflowFailed, nid: int, wid: str) -> None:
        self._status(e, wid, "error", e.reason, ended=True)

    def halted(self, e: Halt, nid: int, wid: str) -> None:
        touched = self._touch(e, wid)
        if touched is None:
            return
        workflow, at = touched
        status, reason = halt(e)
        workflow.status, workflow.reason = status, reason
        workflow.ended_at = workflow.ended_at or at
        for job in self.jobs_of.get(workflow.workflow_id, ()):
            if job.status in JOB_HALTABLE:
                self._set_job(job, "stopped", at)
                job.error, job.ended_at = reason, at
        for step in self.steps[workflow.workflow_id].values():
            if step.status in STEP_OPEN:
                self._set_step(workflow.workflow_id, step.step_id, "stopped", at, step.reason)


_HANDLERS: dict[type[ev.Event], Callable[[_Batch, Any, int, str], None]] = {
    ev.WorkflowStarted: _Batch.started,
    ev.JobSubmitted: _Batch.submitted,
    ev.JobProgressed: _Batch.progressed,
    ev.JobCompleted: _Batch.completed,
    ev.JobErrored: _Batch.failed,
    ev.JobTimedOut: _Batch.failed,
    ev.JobUnroutable: _Batch.failed,
    ev.JobStopped: _Batch.failed,
    ev.JobRetryRequested: _Batch.retry_requested,
    ev.JobRetryScheduled: _Batch.retry_scheduled,
    ev.StepCompleted: _Batch.step_completed,
    ev.StepSkipped: _Batch.step_skipped,
    ev.StepFailed: _Batch.step_failed,
    ev.WorkflowPaused: _Batch.paused,
    ev.WorkflowResumed: _Batch.resumed,
    ev.WorkflowCompleted: _Batch.completed_workflow,
    ev.WorkflowFailed: _Batch.failed_workflow,
    ev.WorkflowStopped: _Batch.halted,
    ev.WorkflowDeleted: _Batch.halted,
}
