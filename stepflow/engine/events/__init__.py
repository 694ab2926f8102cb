"""Domain events of the Workflow aggregate: the log that is the single source of truth.

Every event is a frozen msgspec Struct tagged with its class name (and its schema version
from version 2 on, see `stepflow.engine.upcasting`), so one decoder reads any of them and the
stored topic is the class name. Events split in three kinds, one module each:

- facts from outside (`facts`: a start, a worker's response, an operator's order), which
  carry the causing broker message id (`cause`) and who issued them (`actor`);
- decisions the aggregate derived from the facts (`decisions`, listed in `DECISIONS`), which
  replay re-derives to check that the rules are deterministic;
- records outside the workflows' streams (`records`: quarantined and suspected messages,
  refused actions, orders sent to workers), each in a stream of its own.

Import them from here (`from stepflow.engine import events as ev`, then `ev.JobCompleted`):
this module names every event, groups them (`WorkflowEvent`, `DECISIONS`, `STORED_EVENTS`)
and holds the one codec that reads them all. A class's module is no part of what is stored
(the tag and the topic are its name), so events may move between these modules freely.
"""

from __future__ import annotations

from typing import get_args

from stepflow.engine.codec import VersionedCodec
from stepflow.engine.events.base import Event
from stepflow.engine.events.decisions import (
    JobRetryScheduled,
    JobSubmitted,
    StepCompleted,
    StepFailed,
    StepSkipped,
    WorkflowCompleted,
    WorkflowFailed,
)
from stepflow.engine.events.facts import (
    JobCompleted,
    JobErrored,
    JobProgressed,
    JobRetryRequested,
    JobStopped,
    JobTimedOut,
    JobUnroutable,
    LateAnswerReceived,
    WorkflowDeleted,
    WorkflowPaused,
    WorkflowResumed,
    WorkflowStarted,
    WorkflowStopped,
)
from stepflow.engine.events.records import (
    QUARANTINE_NAMESPACE,
    REFUSAL_NAMESPACE,
    SUSPECT_NAMESPACE,
    WORKER_ORDER_NAMESPACE,
    ActionRefused,
    MessageQuarantined,
    MessageSuspected,
    SuspicionCleared,
    WorkerOrdered,
    WorkflowNumbered,
    quarantine_stream_id,
    refusal_stream_id,
    suspect_stream_id,
    worker_order_stream_id,
)

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

# Every event type the store holds, workflow streams or not: one codec reads them all.
STORED_EVENTS: tuple[type[Event], ...] = (
    *get_args(WorkflowEvent), MessageQuarantined, MessageSuspected, SuspicionCleared, ActionRefused,
    WorkerOrdered, WorkflowNumbered,
)
codec = VersionedCodec(STORED_EVENTS)


def encode(event: Event) -> bytes:
    return codec.encode(event)


def decode(data: bytes) -> Event:
    """Any stored event, upcast to its current version if it was stored in an older one."""
    return codec.decode(data)  # type: ignore[no-any-return]


__all__ = [
    "DECISIONS",
    "QUARANTINE_NAMESPACE",
    "REFUSAL_NAMESPACE",
    "STORED_EVENTS",
    "SUSPECT_NAMESPACE",
    "WORKER_ORDER_NAMESPACE",
    "ActionRefused",
    "Event",
    "JobCompleted",
    "JobErrored",
    "JobProgressed",
    "JobRetryRequested",
    "JobRetryScheduled",
    "JobStopped",
    "JobSubmitted",
    "JobTimedOut",
    "JobUnroutable",
    "LateAnswerReceived",
    "MessageQuarantined",
    "MessageSuspected",
    "StepCompleted",
    "StepFailed",
    "StepSkipped",
    "SuspicionCleared",
    "WorkerOrdered",
    "WorkflowCompleted",
    "WorkflowDeleted",
    "WorkflowEvent",
    "WorkflowFailed",
    "WorkflowNumbered",
    "WorkflowPaused",
    "WorkflowResumed",
    "WorkflowStarted",
    "WorkflowStopped",
    "codec",
    "decode",
    "encode",
    "quarantine_stream_id",
    "refusal_stream_id",
    "suspect_stream_id",
    "worker_order_stream_id",
]
