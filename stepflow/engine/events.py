"""Domain events of the Workflow aggregate: the log that is the single source of truth.

Every event is a frozen msgspec Struct tagged with its class name (and its schema version
from version 2 on, see `stepflow.engine.upcasting`), so one decoder reads any of them and the
stored topic is the class name. Events split in two kinds:

- facts from outside (a start, a worker's response, an operator's order), which carry the
  causing broker message id (`cause`) and who issued them (`actor`);
- decisions the aggregate derived from the facts (`DECISIONS`), which replay re-derives to
  check that the rules are deterministic.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, get_args
from uuid import UUID, uuid5

import msgspec

from stepflow.engine.codec import VersionedCodec
from stepflow.engine.definitions import WorkflowDefinition


class Event(msgspec.Struct, frozen=True, kw_only=True, tag=True, gc=False):
    # gc=False: an event holds plain data and can never be part of a reference cycle, so the
    # cycle collector need not track it; reading a long log then spends a third less time in GC.
    schema_version: ClassVar[int] = 1  # of the stored shape; a change bumps it (see upcasting)
    originator_id: UUID
    originator_version: int
    timestamp: datetime
    cause: str | None = None
    actor: str | None = None


# --- facts --------------------------------------------------------------------------------


class WorkflowStarted(Event, frozen=True, kw_only=True):
    definition: WorkflowDefinition
    parameters: dict[str, Any]
    labels: tuple[str, ...] = ()


class JobProgressed(Event, frozen=True, kw_only=True):
    job_id: str
    progression: int
    message: str | None = None
    worker: str | None = None
    digest: str | None = None  # of the causing answer's content: tells a redelivery from a clash


class JobCompleted(Event, frozen=True, kw_only=True):
    job_id: str
    outputs: dict[str, Any] = {}
    destination_paths: tuple[str, ...] = ()
    execution_duration: float | None = None
    worker: str | None = None
    digest: str | None = None


class JobErrored(Event, frozen=True, kw_only=True):
    job_id: str
    message: str
    kind: str | None = None
    execution_duration: float | None = None
    worker: str | None = None
    digest: str | None = None


class JobUnroutable(Event, frozen=True, kw_only=True):
    job_id: str
    job_type: str
    digest: str | None = None


class JobTimedOut(Event, frozen=True, kw_only=True):
    job_id: str
    timeout_s: float


class JobStopped(Event, frozen=True, kw_only=True):
    job_id: str
    reason: str = ""
    digest: str | None = None


class LateAnswerReceived(Event, frozen=True, kw_only=True):
    """A well-formed answer for a job that was no longer running (stopped, timed out, retried,
    already answered): not garbage, and not applied; kept with what the worker sent."""

    job_id: str
    answer: str  # completed, error, stopped, unroutable
    job_status: str  # what the job was when the answer came
    outputs: dict[str, Any] = {}
    message: str | None = None
    worker: str | None = None
    digest: str | None = None


class JobRetryRequested(Event, frozen=True, kw_only=True):
    """An operator asked to run a finished (errored, stopped, unroutable) job again."""

    job_id: str


class WorkflowPaused(Event, frozen=True, kw_only=True):
    pass


class WorkflowResumed(Event, frozen=True, kw_only=True):
    pass


class WorkflowStopped(Event, frozen=True, kw_only=True):
    reason: str = ""
    jobs: tuple[str, ...] = ()  # the jobs running then, which workers are told to stop


class WorkflowDeleted(Event, frozen=True, kw_only=True):
    jobs: tuple[str, ...] = ()


# --- decisions ----------------------------------------------------------------------------


class JobSubmitted(Event, frozen=True, kw_only=True):
    job_id: str
    step_id: str
    index: int
    attempt: int
    job_type: str
    parameters: dict[str, Any]
    priority: int = 0
    delay_s: float = 0.0
    timeout_s: float | None = None
    mode: str = "job"  # "notification": the backend makes the HTTP call in `parameters` itself


class JobRetryScheduled(Event, frozen=True, kw_only=True):
    job_id: str
    next_job_id: str
    attempt: int
    delay_s: float


class StepCompleted(Event, frozen=True, kw_only=True):
    step_id: str
    outputs: dict[str, Any] = {}
    failed_jobs: int = 0


class StepSkipped(Event, frozen=True, kw_only=True):
    step_id: str
    reason: str


class StepFailed(Event, frozen=True, kw_only=True):
    step_id: str
    reason: str


class WorkflowCompleted(Event, frozen=True, kw_only=True):
    pass


class WorkflowFailed(Event, frozen=True, kw_only=True):
    reason: str


WorkflowEvent = (
    WorkflowStarted
    | JobProgressed
    | JobCompleted
    | JobErrored
    | JobUnroutable
    | JobTimedOut
    | JobStopped
    | JobRetryRequested
    | WorkflowPaused
    | WorkflowResumed
    | WorkflowStopped
    | WorkflowDeleted
    | JobSubmitted
    | JobRetryScheduled
    | StepCompleted
    | StepSkipped
    | StepFailed
    | WorkflowCompleted
    | WorkflowFailed
    | LateAnswerReceived
)

DECISIONS: tuple[type[Event], ...] = (
    JobSubmitted,
    JobRetryScheduled,
    StepCompleted,
    StepSkipped,
    StepFailed,
    WorkflowCompleted,
    WorkflowFailed,
)


class MessageQuarantined(Event, frozen=True, kw_only=True):
    """A broker message the backend could not use, kept in the log beside the quarantine queue.

    Its own one-event stream (`quarantine_stream_id`), so recording it never contends with a
    workflow and recording the same message twice is a harmless version conflict.
    """

    message_id: str | None
    queue: str
    reason: str
    headers: dict[str, str] = {}
    body_excerpt: str = ""
    body_size: int = 0
    # malformed (cannot decode), unknown (no such workflow or job), conflicting_duplicate (an
    # applied message id with another body), poison (raised while applied, or killed the
    # backend twice when alone); events stored before kinds existed were all malformed.
    kind: str = "malformed"
    digest: str | None = None  # conflicting_duplicate: this answer's content digest
    applied_digest: str | None = None  # conflicting_duplicate: the applied answer's


class MessageSuspected(Event, frozen=True, kw_only=True):
    """A redelivered message is about to be applied alone (the crash-loop breaker).

    Its stream (`suspect_stream_id`) counts the attempts: a message whose earlier attempts
    never finished (the backend died each time) is quarantined instead of tried again.
    """

    message_id: str | None
    queue: str


class SuspicionCleared(Event, frozen=True, kw_only=True):
    """The suspect was applied: stored in the same transaction as what it caused, so a backend
    that dies after that commit (and before its ack) is not blamed on the message."""


QUARANTINE_NAMESPACE = UUID("5f0c8d1e-6a42-4c8e-9d7b-8f6f2b1c0e11")


def quarantine_stream_id(key: str) -> UUID:
    return uuid5(QUARANTINE_NAMESPACE, key)


SUSPECT_NAMESPACE = UUID("9a3c6f1e-2b7d-4e58-b0c4-7d1e5a2f8c36")


def suspect_stream_id(key: str) -> UUID:
    return uuid5(SUSPECT_NAMESPACE, key)


class ActionRefused(Event, frozen=True, kw_only=True):
    """An operator action refused for lack of rights (an HTTP 403), kept for the audit log.

    Its own one-event stream (`refusal_stream_id`), like `MessageQuarantined`; `actor` is the
    user who asked. `workflow_id` is None for a refused start.
    """

    action: str
    groups: tuple[str, ...] = ()
    definition: str | None = None
    workflow_id: str | None = None
    request: str = ""  # e.g. "POST /api/workflows/…/stop"
    reason: str = ""


REFUSAL_NAMESPACE = UUID("0b1e7a52-3f0d-4c4e-a8a1-2d6c3e9f4b70")


def refusal_stream_id(key: str) -> UUID:
    return uuid5(REFUSAL_NAMESPACE, key)


class WorkerOrdered(Event, frozen=True, kw_only=True):
    """An operator sent a worker a direct order (`stepflow worker-control`, the HTTP API or
    the web view), kept for the audit log and for the workers view (a paused worker shows as
    paused: the SDK itself only reports Idle or Busy).

    Its own one-event stream (`worker_order_stream_id`), like `ActionRefused`; `actor` is who
    sent it. `order` is the protocol's name (`status`, `stop_consuming_jobs`,
    `resume_consuming_jobs`, `stop_worker`); `via` says which door it came through.
    """

    instance_id: str
    order: str
    via: str = ""  # cli, http
    request: str = ""  # e.g. "POST /api/workers/…/pause"


WORKER_ORDER_NAMESPACE = UUID("d4a6c2e8-1f3b-4b7a-9c5e-6e2f8a1b3c47")


def worker_order_stream_id(key: str) -> UUID:
    return uuid5(WORKER_ORDER_NAMESPACE, key)


# Every event type the store holds, workflow streams or not: one codec reads them all.
STORED_EVENTS: tuple[type[Event], ...] = (
    *get_args(WorkflowEvent), MessageQuarantined, MessageSuspected, SuspicionCleared, ActionRefused,
    WorkerOrdered,
)
codec = VersionedCodec(STORED_EVENTS)


def encode(event: Event) -> bytes:
    return codec.encode(event)


def decode(data: bytes) -> Event:
    """Any stored event, upcast to its current version if it was stored in an older one."""
    return codec.decode(data)  # type: ignore[no-any-return]
