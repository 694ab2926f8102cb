"""Which jobs with a timeout are still in flight: what a backend arms when it starts.

Read from the log, not from memory, so any backend finds every job, whoever published it. A
job submitted with `timeout_s` is in flight until an event ends it: its own end, or the end
of its workflow (completed, failed, stopped or deleted: a late job's timeout would only be
refused).

So that a restart does not read the whole log, the scan starts from a tracked low-water
mark (`Tracking("deadlines", id)`): no job with a timeout submitted at or before it is still
in flight. Each scan moves it to just before the oldest job it found in flight. Such a mark
stays true forever, because jobs submitted later get later ids, so several backends may each
advance it.
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.persistence import IntegrityError, Tracking

from stepflow.engine import events as ev
from stepflow.engine.application import WorkflowEngine

MARK = "deadlines"
TOPICS = ("JobSubmitted", "JobCompleted", "JobErrored", "JobUnroutable", "JobTimedOut", "JobStopped",
          "WorkflowStopped", "WorkflowDeleted", "WorkflowCompleted", "WorkflowFailed")

_WORKFLOW_ENDS = (ev.WorkflowCompleted, ev.WorkflowFailed, ev.WorkflowStopped, ev.WorkflowDeleted)


def jobs_in_flight(engine: WorkflowEngine, page: int = 1000) -> dict[str, tuple[UUID, float]]:
    """job id -> (workflow id, timeout in seconds), for jobs with a timeout still in flight;
    advances the low-water mark as a side effect."""
    tracking = engine.factory.tracking_recorder()
    start = position = tracking.max_tracking_id(MARK) or 0
    in_flight: dict[str, tuple[UUID, float, int]] = {}  # job -> (workflow, timeout, submitted at)
    by_workflow: dict[UUID, set[str]] = {}
    while items := engine.notifications(position, page, topics=TOPICS):
        for notification_id, event in items:
            workflow_id = event.originator_id
            if isinstance(event, ev.JobSubmitted):
                if event.timeout_s:
                    in_flight[event.job_id] = (workflow_id, event.timeout_s, notification_id)
                    by_workflow.setdefault(workflow_id, set()).add(event.job_id)
            elif isinstance(event, _WORKFLOW_ENDS):
                for job_id in by_workflow.pop(workflow_id, ()):
                    in_flight.pop(job_id, None)
            else:  # one job's end
                in_flight.pop(event.job_id, None)  # type: ignore[attr-defined]
                by_workflow.get(workflow_id, set()).discard(event.job_id)  # type: ignore[attr-defined]
        position = items[-1][0]
    mark = min((at for _, _, at in in_flight.values()), default=position + 1) - 1
    if mark > start:
        try:
            tracking.insert_tracking(Tracking(MARK, mark))
        except IntegrityError:
            pass  # another backend moved it further at the same time
    return {job_id: (workflow_id, timeout) for job_id, (workflow_id, timeout, _) in in_flight.items()}
