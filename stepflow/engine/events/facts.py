"""Facts: what came from outside a workflow (a start, a worker's response, an operator's order).

They carry the causing broker message id (`cause`) and who issued them (`actor`); the
aggregate records them as they came, and replay takes them as given.

`# noqa: RUF012`: ruff cannot tell from this module that `Event` is a msgspec Struct, which
gives each instance a copy of a mutable default, not a shared one.
"""

from __future__ import annotations

from typing import Any

from stepflow.engine.definitions import WorkflowDefinition
from stepflow.engine.events.base import Event


class WorkflowStarted(Event, frozen=True, kw_only=True):
    definition: WorkflowDefinition
    parameters: dict[str, Any]
    labels: tuple[str, ...] = ()
    number: int | None = None  # for the jobs' wire ids (`stepflow.engine.wire`); None before they existed


class JobProgressed(Event, frozen=True, kw_only=True):
    job_id: str
    progression: int
    message: str | None = None
    worker: str | None = None
    digest: str | None = None  # of the causing answer's content: tells a redelivery from a clash


class JobCompleted(Event, frozen=True, kw_only=True):
    job_id: str
    outputs: dict[str, Any] = {}  # noqa: RUF012 (see the docstring)
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
    outputs: dict[str, Any] = {}  # noqa: RUF012 (see the docstring)
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
