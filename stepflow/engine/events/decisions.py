"""Decisions: the events the aggregate derived from the facts (`stepflow.engine.decisions`).

Replay re-derives them to check that the rules are deterministic (`DECISIONS` in
`stepflow.engine.events`). `JobSubmitted` is also the order the outbox sends.

`# noqa: RUF012`: ruff cannot tell from this module that `Event` is a msgspec Struct, which
gives each instance a copy of a mutable default, not a shared one.
"""

from __future__ import annotations

from typing import Any

from stepflow.engine.events.base import Event


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
    wire_id: int | None = None  # the integer job id on the wire (`stepflow.engine.wire`)


class JobRetryScheduled(Event, frozen=True, kw_only=True):
    job_id: str
    next_job_id: str
    attempt: int
    delay_s: float


class StepCompleted(Event, frozen=True, kw_only=True):
    step_id: str
    outputs: dict[str, Any] = {}  # noqa: RUF012 (see the docstring)
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
