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


class RecordProgress(Command, frozen=True, kw_only=True):
    job_id: str
    progression: int
    message: str | None = None
    worker: str | None = None


class RecordCompleted(Command, frozen=True, kw_only=True):
    job_id: str
    outputs: dict[str, Any] = {}
    destination_paths: tuple[str, ...] = ()
    execution_duration: float | None = None
    worker: str | None = None


class RecordError(Command, frozen=True, kw_only=True):
    job_id: str
    message: str
    kind: str | None = None
    execution_duration: float | None = None
    worker: str | None = None


class RecordStopped(Command, frozen=True, kw_only=True):
    job_id: str
    reason: str = ""


class RecordUnroutable(Command, frozen=True, kw_only=True):
    job_id: str
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
