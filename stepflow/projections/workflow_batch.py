"""The rows one batch of the `workflows` projection reads, changes and writes back.

Moves 1 and 3 of a batch (see `stepflow.projections.workflows`) and the row changes every
handler shares: loading only what the batch needs and nothing cached has, keeping a step's
job counters right on every job transition, and writing each table back in one
`executemany`. The handlers themselves (move 2) are `stepflow.projections.workflow_handlers`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import msgspec

from stepflow.engine import events as ev
from stepflow.engine.statuses import JOB_HALTABLE, STEP_DONE, WORKFLOW_FINAL
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
from stepflow.projections.store import Tx, fetch_in

_json = msgspec.json.Encoder()
HALTABLE = tuple(sorted(JOB_HALTABLE))  # SQL parameters, in a stable order
JOB_REFERENCES = (ev.JobProgressed, ev.JobCompleted, ev.JobErrored, ev.JobUnroutable, ev.JobTimedOut,
                  ev.JobStopped, ev.JobRetryRequested, ev.JobRetryScheduled)


def dumps(value: Any) -> str:
    return _json.encode(value).decode()


class RowCache:
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


class RowBatch:
    """One batch's rows: the cache's, plus what `load` read; `dirty_*` is what to write."""

    def __init__(self, tx: Tx, cache: RowCache) -> None:
        self.tx = tx
        self.workflows = cache.workflows
        self.steps = cache.steps
        self.jobs = cache.jobs
        self.jobs_of = cache.jobs_of
        self.labels: list[tuple[str, int, str]] = []
        self.dirty_workflows: set[str] = set()
        self.dirty_steps: set[tuple[str, str]] = set()
        self.dirty_jobs: set[str] = set()

    def finished(self) -> list[str]:
        """The workflows this batch ended (they leave the cache once it commits)."""
        return [w for w in self.dirty_workflows if self.workflows[w].status in WORKFLOW_FINAL]

    # --- 1. load ---------------------------------------------------------------------

    def load(self, batch: Sequence[tuple[int, ev.Event]], handled: Collection[type[ev.Event]]) -> list[str]:
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
            elif kind not in handled:
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
            self.add_job(JobRow(*row))
        if halted:
            marks = ", ".join("?" * len(HALTABLE))
            for row in fetch_in(self.tx, JOBS.select(), "workflow_id", halted,
                                f"AND status IN ({marks})", HALTABLE):
                if row[0] not in self.jobs:
                    self.add_job(JobRow(*row))
        return ids

    # --- row changes the handlers share ----------------------------------------------

    def add_job(self, job: JobRow) -> None:
        self.jobs[job.job_id] = job
        self.jobs_of.setdefault(job.workflow_id, []).append(job)

    def touch(self, event: ev.Event, workflow_id: str) -> tuple[WorkflowRow, float] | None:
        """The event's workflow row, marked changed, and the event's time; None if never started."""
        workflow = self.workflows.get(workflow_id)
        if workflow is None:
            return None  # a stream the view never saw start: nothing to attach the event to
        at = event.timestamp.timestamp()
        workflow.updated_at = at
        workflow.version = event.originator_version
        self.dirty_workflows.add(workflow_id)
        return workflow, at

    def job_event(self, e: Any, wid: str) -> tuple[JobRow, float] | None:
        """The row of the job an event names, and the event's time; None if unknown."""
        touched = self.touch(e, wid)
        job = self.jobs.get(e.job_id)
        if touched is None or job is None:
            return None
        return job, touched[1]

    def set_job(self, job: JobRow, status: str, at: float) -> None:
        """Move a job to `status`, and its step's counters with it."""
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

    def set_step(self, workflow_id: str, step_id: str, status: str, at: float,
                 reason: str | None = None, ended: bool = True) -> None:
        step = self.steps[workflow_id][step_id]
        step.status = status
        step.reason = reason
        step.updated_at = at
        if ended:
            step.ended_at = at
        self.dirty_steps.add((workflow_id, step_id))

    # --- 3. write --------------------------------------------------------------------

    def write(self) -> None:
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
