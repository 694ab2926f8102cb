"""Commands to the engine: what adapters ask, as data, so a batch of them is one call.

Every command names its workflow; those caused by a broker message carry its id (`cause`),
which the aggregate uses to recognise a redelivery.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec


class Command(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    workflow_id: UUID
    cause: str | None = None
    actor: str | None = None
    digest: str | None = None  # of the causing message's body (see `Workflow._seen`)


NO_WORKFLOW = UUID(int=0)  # a worker's answer that named no workflow: the engine finds it by wire id


class JobAnswer(Command, frozen=True, kw_only=True):
    """A worker's answer about one job. A worker of the original SDK names the job only by its
    integer wire id (`stepflow.engine.wire`): then `job_id` is empty, and `workflow_id` is
    `NO_WORKFLOW` unless the message said it, and the engine finds both through the store."""

    job_id: str
    wire_id: int | None = None


class RecordProgress(JobAnswer, frozen=True, kw_only=True):
    progression: int
    message: str | None = None
    worker: str | None = None


class RecordCompleted(JobAnswer, frozen=True, kw_only=True):
    outputs: dict[str, Any] = {}
    destination_paths: tuple[str, ...] = ()
    execution_duration: float | None = None
    worker: str | None = None


class RecordError(JobAnswer, frozen=True, kw_only=True):
    message: str
    kind: str | None = None
    execution_duration: float | None = None
    worker: str | None = None


class RecordStopped(JobAnswer, frozen=True, kw_only=True):
    reason: str = ""


class RecordUnroutable(JobAnswer, frozen=True, kw_only=True):
    job_type: str


class RecordTimeout(Command, frozen=True, kw_only=True):
    job_id: str


class RetryJob(Command, frozen=True, kw_only=True):
    job_id: str


class PauseWorkflow(Command, frozen=True, kw_only=True):
    pass


class ResumeWorkflow(Command, frozen=True, kw_only=True):
    pass


class StopWorkflow(Command, frozen=True, kw_only=True):
    reason: str = ""


class DeleteWorkflow(Command, frozen=True, kw_only=True):
    pass


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What became of one command: applied; ignored on purpose (`ignored`: duplicate, late,
    late_progress); or rejected with a reason and its kind (unknown, conflicting_duplicate,
    refused)."""

    rejected: str | None = None
    kind: str | None = None  # the rejection's kind
    applied_digest: str | None = None  # conflicting_duplicate: the body applied before
    ignored: str | None = None
    # an answer that named its job by wire id only: the job and workflow the engine found
    job_id: str | None = None
    workflow_id: UUID | None = None

    @property
    def ok(self) -> bool:
        return self.rejected is None


OK = Outcome()


class Quarantine(msgspec.Struct, frozen=True, kw_only=True):
    """Keep a message we could not use: recorded once per `key` (its message id, or a hash
    of its body when it has none), in a one-event stream of its own, not in a workflow."""

    key: str
    queue: str
    reason: str
    kind: str = "malformed"
    message_id: str | None = None
    headers: dict[str, str] = {}
    body: bytes = b""
    digest: str | None = None
    applied_digest: str | None = None
