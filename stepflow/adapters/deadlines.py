"""The clocks of jobs with a `timeout_s`: a job with no sign of life for that long is due.

Kept in memory, by one backend: `arm` when its order is published (the clock starts after
the order's delay), `touch` on a progression, `end` on an answer, `expired` for the jobs to
record as timed out. A backend that starts (e.g. after a crash) `resume`s the jobs still in
flight, found in the log rather than in memory, so it finds every job whoever published it;
their clocks start afresh. A job is in flight until an event ends it: its own end, or the
end of its workflow (completed, failed, stopped or deleted: a late job's timeout would only
be refused). Arming every job ever submitted would, one timeout later, send a refused
`RecordTimeout` for each of them.

So that a restart does not read the whole log, the scan follows it from a tracked low-water
mark (`Tracking("deadlines", id)`): no job with a timeout submitted at or before it is still
in flight. Each scan moves it to just before the oldest job it found in flight. Such a mark
stays true forever, because jobs submitted later get later ids, so several backends may each
advance it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple
from uuid import UUID

from stepflow.engine import events as ev
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.follower import LogFollower

MARK = "deadlines"
TOPICS = ("JobSubmitted", "JobCompleted", "JobErrored", "JobUnroutable", "JobTimedOut", "JobStopped",
          "WorkflowStopped", "WorkflowDeleted", "WorkflowCompleted", "WorkflowFailed")

_WORKFLOW_ENDS = (ev.WorkflowCompleted, ev.WorkflowFailed, ev.WorkflowStopped, ev.WorkflowDeleted)


class Clock(NamedTuple):
    workflow_id: UUID
    timeout_s: float
    last_sign: datetime  # of life: the order's publication (after its delay) or a progression


class Due(NamedTuple):
    job_id: str
    workflow_id: UUID


class Deadlines:
    """job id -> its clock. Used from the backend's event loop only (`resume` before it runs)."""

    def __init__(self) -> None:
        self._clocks: dict[str, Clock] = {}

    def __len__(self) -> int:
        return len(self._clocks)

    def armed(self) -> dict[str, tuple[UUID, float]]:
        """job id -> (workflow id, timeout in seconds), for every clock running."""
        return {job_id: (c.workflow_id, c.timeout_s) for job_id, c in self._clocks.items()}

    def arm(self, order: ev.JobSubmitted, now: datetime) -> None:
        if order.timeout_s:
            self._clocks[order.job_id] = Clock(order.originator_id, order.timeout_s,
                                               now + timedelta(seconds=order.delay_s))

    def touch(self, job_id: str, now: datetime) -> None:
        clock = self._clocks.get(job_id)
        if clock is not None:
            self._clocks[job_id] = clock._replace(last_sign=now)

    def end(self, job_id: str) -> None:
        self._clocks.pop(job_id, None)

    def expired(self, now: datetime) -> list[Due]:
        return [Due(job_id, c.workflow_id) for job_id, c in self._clocks.items()
                if now - c.last_sign > timedelta(seconds=c.timeout_s)]

    def resume(self, engine: WorkflowEngine, now: datetime, page: int = 1000) -> int:
        """Arm the jobs with a timeout still in flight, from the log; advance the low-water
        mark. Synchronous (it reads the store): run it before the backend takes commands.
        Return how many were armed."""
        mark = LogFollower(engine, MARK, TOPICS, batch_size=page)
        in_flight: dict[str, tuple[UUID, float, int]] = {}  # job -> (workflow, timeout, submitted at)
        by_workflow: dict[UUID, set[str]] = {}
        position = mark.position
        while items := mark.read(position):
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
        mark.record(min((at for _, _, at in in_flight.values()), default=position + 1) - 1)
        for job_id, (workflow_id, timeout, _) in in_flight.items():
            self._clocks[job_id] = Clock(workflow_id, timeout, now)
        return len(in_flight)
