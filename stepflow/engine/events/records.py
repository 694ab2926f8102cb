"""Records outside the workflows' streams: the backend's and the operators' audit trail.

A message the backend could not use (`MessageQuarantined`), one it is about to try alone
(`MessageSuspected`, `SuspicionCleared`), an operator's action refused (`ActionRefused`) or
order sent to a worker (`WorkerOrdered`). Each goes to a stream of its own, named by a uuid5
of what it is about (`*_stream_id`), so recording one never contends with a workflow.

`# noqa: RUF012`: ruff cannot tell from this module that `Event` is a msgspec Struct, which
gives each instance a copy of a mutable default, not a shared one.
"""

from __future__ import annotations

from uuid import UUID, uuid5

from stepflow.engine.events.base import Event


class MessageQuarantined(Event, frozen=True, kw_only=True):
    """A broker message the backend could not use, kept in the log beside the quarantine queue.

    Its own one-event stream (`quarantine_stream_id`), so recording it never contends with a
    workflow and recording the same message twice is a harmless version conflict.
    """

    message_id: str | None
    queue: str
    reason: str
    headers: dict[str, str] = {}  # noqa: RUF012 (see the docstring)
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


class WorkflowNumbered(Event, frozen=True, kw_only=True):
    """A workflow number taken (see `stepflow.engine.wire`): the index from an integer job id
    on the wire back to its workflow. Its own one-event stream (`wire.number_stream_id`),
    saved with the `WorkflowStarted`, so two workflows can never hold the same number."""

    workflow_id: UUID


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
