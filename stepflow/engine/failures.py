"""What a job, step or workflow is told when it ends badly: each text written once.

The engine's state (`evolve`), its decisions, the `workflows` view and the history timeline
all show these texts; `stepflow replay` compares the aggregate with the view field by field,
so a text written twice would have been a difference waiting to happen.
"""

from __future__ import annotations

from typing import NamedTuple

from stepflow.engine import events as ev
from stepflow.engine.statuses import JobStatus, WorkflowStatus

JobEnding = ev.JobErrored | ev.JobTimedOut | ev.JobUnroutable | ev.JobStopped
Halt = ev.WorkflowStopped | ev.WorkflowDeleted


class JobFailure(NamedTuple):
    status: JobStatus
    error: str
    kind: str | None


def job_failure(event: JobEnding) -> JobFailure:
    """The status, error text and error kind a job takes from the event that ended it."""
    match event:
        case ev.JobErrored():
            return JobFailure("error", event.message, event.kind)
        case ev.JobTimedOut():
            return JobFailure("error", f"no response within {event.timeout_s:g}s", "timeout")
        case ev.JobUnroutable():
            return JobFailure("unroutable", f"no queue serves job type {event.job_type!r}", "unroutable")
        case ev.JobStopped():
            return JobFailure("stopped", event.reason or "stopped", "stopped")
    raise TypeError(f"{type(event).__name__} does not end a job")


def halt(event: Halt) -> tuple[WorkflowStatus, str]:
    """The status and reason a workflow takes when an operator stops or deletes it."""
    if isinstance(event, ev.WorkflowStopped):
        return "stopped", event.reason or "stopped by operator"
    return "deleted", "deleted"


def step_failure(job_id: str, status: str, error: str | None) -> str:
    """Why a step failed: its first job that failed for good."""
    return f"job {job_id} {status}: {error}"


def workflow_failure(step_id: str, reason: str | None) -> str:
    """Why a workflow failed: its first failed step, in step order."""
    return f"step {step_id!r} failed: {reason}"
