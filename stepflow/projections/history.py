"""A workflow's history as a timeline, and the whole log as an audit trail.

Both read the event store directly (not a view): the log is the record. `timeline` names
the step and attempt of job events (events carry only the job id) by following the
`JobSubmitted` events of the same history; its entries' `detail` is a short line for a
terminal, and `records` gives the same entries with every field of each event instead
(`stepflow history --json`: a script reads outputs and errors whole, not clipped words). `audit` walks the notification log in batches,
in the order events were stored, with who (`actor`) and what message (`cause`) caused each.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from stepflow.engine import events as ev
from stepflow.engine.failures import halt, job_failure
from stepflow.projections.log import log_reader

DETAIL_WIDTH = 100
_ENVELOPE = ("type", "originator_id", "originator_version", "timestamp", "cause", "actor")


class _InHistory(msgspec.Struct, frozen=True, kw_only=True):
    """Where an event stands in its workflow's history: what a timeline entry and a whole
    history record share."""

    version: int
    time: datetime
    event: str
    step_id: str | None
    job_id: str | None
    attempt: int | None
    cause: str | None
    actor: str | None


class TimelineEntry(_InHistory, frozen=True, kw_only=True):
    detail: str


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    notification_id: int
    workflow_id: str
    version: int
    time: datetime
    event: str
    actor: str | None
    cause: str | None
    data: dict[str, Any]  # the event's own fields (the envelope is above)


class HistoryRecord(_InHistory, frozen=True, kw_only=True):
    """One event of a workflow's history, whole: its place in the timeline and its own fields."""

    data: dict[str, Any]  # the event's own fields (the envelope is above), as `audit` gives them


def records(events: Sequence[ev.Event]) -> list[HistoryRecord]:
    """The timeline of `events` with each event's fields in full instead of a clipped `detail`."""
    return [HistoryRecord(version=entry.version, time=entry.time, event=entry.event, step_id=entry.step_id,
                          job_id=entry.job_id, attempt=entry.attempt, cause=entry.cause, actor=entry.actor,
                          data=event_fields(event))
            for entry, event in zip(timeline(events), events, strict=True)]


def timeline(events: Sequence[ev.Event]) -> list[TimelineEntry]:
    jobs: dict[str, tuple[str, int]] = {}  # job id -> (step id, attempt)
    out = []
    for event in events:
        job_id: str | None = getattr(event, "job_id", None)
        step_id: str | None = getattr(event, "step_id", None)
        attempt: int | None = None
        if isinstance(event, ev.JobSubmitted):
            jobs[event.job_id] = (event.step_id, event.attempt)
        if job_id is not None and job_id in jobs:
            step_id, attempt = jobs[job_id]
        out.append(TimelineEntry(
            version=event.originator_version, time=event.timestamp, event=type(event).__name__,
            step_id=step_id, job_id=job_id, attempt=attempt, cause=event.cause, actor=event.actor,
            detail=_clip(describe(event)),
        ))
    return out


def describe(event: ev.Event) -> str:
    """A short, human line of what an event says beyond its type, step and job."""
    e: Any = event
    match event:
        case ev.WorkflowStarted():
            labels = f" [{', '.join(e.labels)}]" if e.labels else ""
            params = " ".join(f"{k}={v!r}" for k, v in e.parameters.items())
            return f"{e.definition.identifier} {e.definition.version}{labels} {params}".strip()
        case ev.JobSubmitted():
            delay = f", after {e.delay_s:g}s" if e.delay_s else ""
            return f"{e.job_type} item {e.index}, priority {e.priority}{delay}"
        case ev.JobProgressed():
            return " ".join(x for x in (f"{e.progression}%", e.message or "", _by(e.worker)) if x)
        case ev.JobCompleted():
            took = f"in {e.execution_duration:g}s" if e.execution_duration is not None else ""
            outputs = f"outputs {', '.join(e.outputs)}" if e.outputs else ""
            return " ".join(x for x in (took, outputs, _by(e.worker)) if x)
        case ev.JobErrored():
            kind = f"{e.kind}: " if e.kind else ""
            return f"{kind}{e.message} {_by(e.worker)}".strip()
        case ev.JobUnroutable() | ev.JobTimedOut() | ev.JobStopped():
            return job_failure(e).error
        case ev.WorkflowStopped():
            return halt(e)[1]
        case ev.JobRetryScheduled():
            return f"attempt {e.attempt} as {e.next_job_id[:8]} in {e.delay_s:g}s"
        case ev.StepCompleted():
            allowed = f"{e.failed_jobs} failed job(s) allowed " if e.failed_jobs else ""
            return f"{allowed}{'outputs ' + ', '.join(e.outputs) if e.outputs else ''}".strip()
        case ev.StepSkipped() | ev.StepFailed() | ev.WorkflowFailed():
            return str(e.reason)
    return ""


def _by(worker: str | None) -> str:
    return f"by {worker}" if worker else ""


def _clip(text: str) -> str:
    return text if len(text) <= DETAIL_WIDTH else text[: DETAIL_WIDTH - 1] + "…"


# `audit --kind`: where each kind of inbound message that was not simply applied can be seen
AUDIT_KINDS: dict[str, tuple[type[ev.Event], ...]] = {
    "quarantine": (ev.MessageQuarantined,),  # malformed, unknown, conflicting_duplicate, poison
    "late": (ev.LateAnswerReceived,),
    "suspect": (ev.MessageSuspected, ev.SuspicionCleared),  # the crash-loop breaker's attempts
    "refused": (ev.ActionRefused,),
    "worker": (ev.WorkerOrdered,),  # direct orders operators sent to workers
}


def audit(
    engine: Any, *, since: datetime | None = None, until: datetime | None = None, after: int = 0,
    actor: str | None = None, workflow_id: UUID | None = None, batch_size: int = 1000,
    kinds: tuple[type[ev.Event], ...] = (),
) -> Iterator[AuditEntry]:
    """Stored events in log order, filtered by time (`since` <= t < `until`), actor, workflow,
    and event types (`kinds`, see `AUDIT_KINDS`).

    `after` resumes an export after a notification id (each entry carries its own).
    """
    read = log_reader(engine)
    try:
        yield from _audit(read, since, until, after, actor, workflow_id, batch_size, kinds)
    finally:
        close = getattr(read, "close", None)
        if close is not None:
            close()


def _audit(read: Any, since: datetime | None, until: datetime | None, after: int, actor: str | None,
           workflow_id: UUID | None, batch_size: int, kinds: tuple[type[ev.Event], ...]) -> Iterator[AuditEntry]:
    position = after
    while True:
        batch = read(position, batch_size)
        if not batch:
            return
        for notification_id, event in batch:
            if since is not None and event.timestamp < since:
                continue
            if until is not None and event.timestamp >= until:
                continue
            if actor is not None and event.actor != actor:
                continue
            if workflow_id is not None and event.originator_id != workflow_id:
                continue
            if kinds and not isinstance(event, kinds):
                continue
            yield audit_entry(notification_id, event)
        position = batch[-1][0]


def audit_entry(notification_id: int, event: ev.Event) -> AuditEntry:
    return AuditEntry(
        notification_id=notification_id, workflow_id=str(event.originator_id),
        version=event.originator_version, time=event.timestamp, event=type(event).__name__,
        actor=event.actor, cause=event.cause, data=event_fields(event),
    )


def event_fields(event: ev.Event) -> dict[str, Any]:
    """An event's own fields as plain data: what it says beyond its envelope (type, workflow,
    version, time, cause, actor)."""
    data: dict[str, Any] = msgspec.to_builtins(event)
    for key in _ENVELOPE:
        data.pop(key, None)
    return data
