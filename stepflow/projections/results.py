"""From view rows to what queries return: the one place a row's columns become a Struct.

Rows are the storage shape (epoch seconds, JSON text columns); results are the callers'
(UTC datetimes, decoded lists and maps, derived durations). Apart from the SQL of
`stepflow.projections.queries` because every query returning a workflow, step or job shares
them: a listing and a detail can never show the same row two ways.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from stepflow.projections.models import JobInfo, StepInfo, WorkflowSummary
from stepflow.projections.rows import JOB_COUNT_FIELD, JobRow, StepRow, WorkflowRow

_decode_list = msgspec.json.Decoder(tuple[str, ...])
_decode_object = msgspec.json.Decoder(dict[str, Any])


def dt(value: float | None) -> datetime | None:
    """Epoch seconds as an aware UTC datetime (None stays None)."""
    return None if value is None else datetime.fromtimestamp(value, UTC)


def summary(row: WorkflowRow) -> WorkflowSummary:
    return WorkflowSummary(
        workflow_id=row.workflow_id, definition=row.definition, definition_version=row.definition_version,
        title=row.title, status=row.status, labels=_decode_list.decode(row.labels),
        tags=_decode_list.decode(row.tags), parameters=_decode_object.decode(row.parameters),
        steps_total=row.steps_total, steps_done=row.steps_done,
        current_steps=_decode_list.decode(row.current_steps), progress=row.progress,
        started_at=dt(row.started_at), ended_at=dt(row.ended_at), updated_at=dt(row.updated_at),  # type: ignore[arg-type]
        duration_s=None if row.ended_at is None else row.ended_at - row.started_at,
        version=row.version, started_by=row.started_by, reason=row.reason, seq=row.seq,
    )


def step_info(row: StepRow) -> StepInfo:
    counts = {status: getattr(row, name) for status, name in JOB_COUNT_FIELD.items() if getattr(row, name)}
    return StepInfo(
        workflow_id=row.workflow_id, step_id=row.step_id, order=row.step_order, job_type=row.job_type,
        status=row.status, reason=row.reason, jobs_total=row.jobs_total, job_counts=counts,
        started_at=dt(row.started_at), ended_at=dt(row.ended_at),
    )


def job_info(row: JobRow) -> JobInfo:
    begun = row.started_at if row.started_at is not None else row.not_before
    duration = row.execution_duration
    if duration is None and row.ended_at is not None:
        duration = max(0.0, row.ended_at - begun)
    return JobInfo(
        job_id=row.job_id, workflow_id=row.workflow_id, step_id=row.step_id, index=row.idx,
        attempt=row.attempt, job_type=row.job_type, status=row.status, priority=row.priority,
        submitted_at=dt(row.submitted_at), not_before=dt(row.not_before),  # type: ignore[arg-type]
        started_at=dt(row.started_at), ended_at=dt(row.ended_at), updated_at=dt(row.updated_at),  # type: ignore[arg-type]
        progression=row.progression, message=row.message, worker=row.worker, error=row.error,
        error_kind=row.error_kind, execution_duration=row.execution_duration, duration_s=duration,
        wait_s=None if row.started_at is None else max(0.0, row.started_at - row.not_before),
        next_job_id=row.next_job_id, seq=row.seq,
    )
