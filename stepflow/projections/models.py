"""What queries return: frozen msgspec Structs, encodable as JSON in one call.

Ids are strings (a workflow id is its UUID's canonical text), times are timezone-aware
`datetime`s in UTC, durations are seconds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class WorkflowSummary(msgspec.Struct, frozen=True, kw_only=True):
    workflow_id: str
    definition: str
    definition_version: str
    title: str
    status: str
    labels: tuple[str, ...]
    tags: tuple[str, ...]
    parameters: dict[str, Any]
    steps_total: int
    steps_done: int
    current_steps: tuple[str, ...]
    progress: float
    started_at: datetime
    ended_at: datetime | None
    updated_at: datetime
    duration_s: float | None
    version: int
    started_by: str | None
    reason: str | None
    seq: int


class StepInfo(msgspec.Struct, frozen=True, kw_only=True):
    workflow_id: str
    step_id: str
    order: int
    job_type: str
    status: str
    reason: str | None
    jobs_total: int
    job_counts: dict[str, int]  # statuses with at least one job
    started_at: datetime | None
    ended_at: datetime | None


class JobInfo(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    workflow_id: str
    step_id: str
    index: int
    attempt: int
    job_type: str
    status: str
    priority: int
    submitted_at: datetime
    not_before: datetime
    started_at: datetime | None
    ended_at: datetime | None
    updated_at: datetime
    progression: int
    message: str | None
    worker: str | None
    error: str | None
    error_kind: str | None
    execution_duration: float | None
    duration_s: float | None  # the worker's figure, else end - first progress (or start)
    wait_s: float | None  # from earliest start (submission + backoff) to first progress
    next_job_id: str | None  # the retry attempt that replaced this one
    seq: int


class WorkflowDetail(msgspec.Struct, frozen=True, kw_only=True):
    workflow: WorkflowSummary
    steps: tuple[StepInfo, ...]
    jobs: tuple[JobInfo, ...]


class WorkflowPage(msgspec.Struct, frozen=True, kw_only=True):
    items: tuple[WorkflowSummary, ...]
    next_cursor: str | None  # pass back as `cursor` for the next page; None: last page


class JobPage(msgspec.Struct, frozen=True, kw_only=True):
    items: tuple[JobInfo, ...]
    next_cursor: str | None


class WorkerInfo(msgspec.Struct, frozen=True, kw_only=True):
    instance_id: str
    job_type: str | None
    label: str | None
    description: str | None
    version: str | None
    sdk_version: str | None
    direct_queue: str | None
    status: str  # alive | paused (alive, told to stop consuming) | gone (no heartbeat within the timeout) | terminated
    activity: str | None  # Idle | Busy, from the last status message
    current_job: str | None
    first_seen: datetime
    last_seen: datetime
    terminated_at: datetime | None
    running_jobs: tuple[str, ...] = ()  # jobs processing whose last progress came from this worker
    last_order: str | None = None  # the last direct order an operator sent it (WorkerOrdered)
    ordered_by: str | None = None
    ordered_at: datetime | None = None


class JobTypeStats(msgspec.Struct, frozen=True, kw_only=True):
    job_type: str
    submitted: int
    retries: int
    completed: int
    errored: int
    timed_out: int
    unroutable: int
    stopped: int
    ended: int
    success_rate: float | None  # completed / ended
    duration_mean_s: float | None
    duration_p50_s: float | None
    duration_p95_s: float | None
    duration_max_s: float | None
