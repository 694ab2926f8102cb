"""Move 2 of a `workflows` batch: one small function per event type, on the batch's rows.

They mirror `stepflow.engine.state.evolve` rule for rule (the same statuses, the same failure
texts from `stepflow.engine.failures`), adding what only the views keep: timings and a step's
job counters. `stepflow replay` compares the two after every event of a history.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stepflow.engine import events as ev
from stepflow.engine.failures import Halt, JobEnding, halt, job_failure
from stepflow.engine.graph import topological_order
from stepflow.engine.statuses import JOB_HALTABLE, STEP_OPEN
from stepflow.projections.rows import JobRow, StepRow, WorkflowRow
from stepflow.projections.workflow_batch import RowBatch, dumps


def started(rows: RowBatch, e: ev.WorkflowStarted, nid: int, wid: str) -> None:
    at = e.timestamp.timestamp()
    definition = e.definition
    rows.workflows[wid] = WorkflowRow(
        workflow_id=wid, seq=nid, definition=definition.identifier, definition_version=definition.version,
        title=definition.label, status="running", labels=dumps(list(e.labels)),
        tags=dumps(list(definition.tags)), parameters=dumps(e.parameters), steps_total=len(definition.steps),
        steps_done=0, current_steps="[]", progress=0.0, started_at=at, ended_at=None, updated_at=at,
        version=e.originator_version, started_by=e.actor, reason=None,
    )
    rows.dirty_workflows.add(wid)
    steps = rows.steps[wid] = {}
    for order, step_id in enumerate(topological_order(definition)):
        job_type = definition.step(step_id).job_type
        steps[step_id] = StepRow(
            workflow_id=wid, step_id=step_id, step_order=order, job_type=job_type, status="waiting",
            reason=None, jobs_total=0, n_queued=0, n_processing=0, n_completed=0, n_error=0, n_retrying=0,
            n_retry_requested=0, n_stopped=0, n_unroutable=0, started_at=None, ended_at=None, updated_at=None,
        )
        rows.dirty_steps.add((wid, step_id))
    for label in dict.fromkeys((*e.labels, *definition.tags)):
        rows.labels.append((label, nid, wid))


def submitted(rows: RowBatch, e: ev.JobSubmitted, nid: int, wid: str) -> None:
    touched = rows.touch(e, wid)
    if touched is None:
        return
    workflow, at = touched
    rows.add_job(JobRow(
        job_id=e.job_id, workflow_id=workflow.workflow_id, step_id=e.step_id, idx=e.index, attempt=e.attempt,
        job_type=e.job_type, status="queued", seq=nid, priority=e.priority, submitted_at=at,
        not_before=at + e.delay_s, started_at=None, ended_at=None, updated_at=at, progression=0, message=None,
        worker=None, error=None, error_kind=None, execution_duration=None, next_job_id=None,
    ))
    rows.dirty_jobs.add(e.job_id)
    step = rows.steps[workflow.workflow_id][e.step_id]
    step.jobs_total += 1
    step.n_queued += 1
    step.status = "processing"
    step.started_at = step.started_at or at
    step.updated_at = at
    rows.dirty_steps.add((workflow.workflow_id, e.step_id))


def progressed(rows: RowBatch, e: ev.JobProgressed, nid: int, wid: str) -> None:
    if found := rows.job_event(e, wid):
        job, at = found
        rows.set_job(job, "processing", at)
        job.progression = e.progression
        job.message = e.message
        job.started_at = job.started_at or at
        job.worker = e.worker or job.worker


def completed(rows: RowBatch, e: ev.JobCompleted, nid: int, wid: str) -> None:
    if found := rows.job_event(e, wid):
        job, at = found
        rows.set_job(job, "completed", at)
        job.progression = 100
        job.ended_at = at
        job.worker = e.worker or job.worker
        job.execution_duration = e.execution_duration


def failed(rows: RowBatch, e: JobEnding, nid: int, wid: str) -> None:
    if found := rows.job_event(e, wid):
        job, at = found
        failure = job_failure(e)
        rows.set_job(job, failure.status, at)
        job.error, job.error_kind, job.ended_at = failure.error, failure.kind, at
        if isinstance(e, ev.JobErrored):
            job.worker = e.worker or job.worker
            job.execution_duration = e.execution_duration


def retry_requested(rows: RowBatch, e: ev.JobRetryRequested, nid: int, wid: str) -> None:
    if found := rows.job_event(e, wid):
        job, at = found
        rows.set_job(job, "retry_requested", at)
        rows.set_step(job.workflow_id, job.step_id, "processing", at, ended=False)
        rows.steps[job.workflow_id][job.step_id].ended_at = None
        workflow = rows.workflows[job.workflow_id]
        if workflow.status == "error":
            workflow.status, workflow.reason, workflow.ended_at = "running", None, None


def retry_scheduled(rows: RowBatch, e: ev.JobRetryScheduled, nid: int, wid: str) -> None:
    if found := rows.job_event(e, wid):
        job, at = found
        rows.set_job(job, "retrying", at)
        job.next_job_id = e.next_job_id


def step_completed(rows: RowBatch, e: ev.StepCompleted, nid: int, wid: str) -> None:
    if touched := rows.touch(e, wid):
        rows.set_step(touched[0].workflow_id, e.step_id, "completed", touched[1])


def step_skipped(rows: RowBatch, e: ev.StepSkipped, nid: int, wid: str) -> None:
    if touched := rows.touch(e, wid):
        rows.set_step(touched[0].workflow_id, e.step_id, "skipped", touched[1], e.reason)


def step_failed(rows: RowBatch, e: ev.StepFailed, nid: int, wid: str) -> None:
    if touched := rows.touch(e, wid):
        rows.set_step(touched[0].workflow_id, e.step_id, "error", touched[1], e.reason)


def _status(rows: RowBatch, e: ev.Event, wid: str, status: str, reason: str | None = None,
            ended: bool = False) -> None:
    if touched := rows.touch(e, wid):
        workflow, at = touched
        workflow.status = status
        if reason is not None:
            workflow.reason = reason
        if ended:
            workflow.ended_at = at


def paused(rows: RowBatch, e: ev.WorkflowPaused, nid: int, wid: str) -> None:
    _status(rows, e, wid, "paused")


def resumed(rows: RowBatch, e: ev.WorkflowResumed, nid: int, wid: str) -> None:
    _status(rows, e, wid, "running")


def completed_workflow(rows: RowBatch, e: ev.WorkflowCompleted, nid: int, wid: str) -> None:
    _status(rows, e, wid, "completed", ended=True)


def failed_workflow(rows: RowBatch, e: ev.WorkflowFailed, nid: int, wid: str) -> None:
    _status(rows, e, wid, "error", e.reason, ended=True)


def halted(rows: RowBatch, e: Halt, nid: int, wid: str) -> None:
    touched = rows.touch(e, wid)
    if touched is None:
        return
    workflow, at = touched
    status, reason = halt(e)
    workflow.status, workflow.reason = status, reason
    workflow.ended_at = workflow.ended_at or at
    for job in rows.jobs_of.get(workflow.workflow_id, ()):
        if job.status in JOB_HALTABLE:
            rows.set_job(job, "stopped", at)
            job.error, job.ended_at = reason, at
    for step in rows.steps[workflow.workflow_id].values():
        if step.status in STEP_OPEN:
            rows.set_step(workflow.workflow_id, step.step_id, "stopped", at, step.reason)


def late_answer(rows: RowBatch, e: ev.LateAnswerReceived, nid: int, wid: str) -> None:
    rows.touch(e, wid)  # the job stays as it ended; the workflow's version still moves


HANDLERS: dict[type[ev.Event], Callable[[RowBatch, Any, int, str], None]] = {
    ev.WorkflowStarted: started,
    ev.JobSubmitted: submitted,
    ev.JobProgressed: progressed,
    ev.JobCompleted: completed,
    ev.JobErrored: failed,
    ev.JobTimedOut: failed,
    ev.JobUnroutable: failed,
    ev.JobStopped: failed,
    ev.JobRetryRequested: retry_requested,
    ev.JobRetryScheduled: retry_scheduled,
    ev.StepCompleted: step_completed,
    ev.StepSkipped: step_skipped,
    ev.StepFailed: step_failed,
    ev.WorkflowPaused: paused,
    ev.WorkflowResumed: resumed,
    ev.WorkflowCompleted: completed_workflow,
    ev.WorkflowFailed: failed_workflow,
    ev.WorkflowStopped: halted,
    ev.WorkflowDeleted: halted,
    ev.LateAnswerReceived: late_answer,
}
