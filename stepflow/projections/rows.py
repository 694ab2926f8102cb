"""Rows of the workflow, step and job views: one mutable Struct per table, in column order.

A row read back from the database is built positionally (`WorkflowRow(*row)`: the SELECT
lists the columns in field order); a row made by a handler is built by keyword, so adding a
column cannot shift the others silently.

Times are seconds since the epoch (UTC) in REAL / DOUBLE PRECISION columns: sortable, one
type on both databases, cheap to write. JSON columns hold small lists and maps.
`stepflow.projections.results` turns these rows into the frozen Structs callers see.
"""

from __future__ import annotations

import msgspec

from stepflow.engine.statuses import JOB_STATUSES
from stepflow.projections.store import Table


class WorkflowRow(msgspec.Struct, gc=False):
    workflow_id: str
    seq: int  # notification id of WorkflowStarted: the keyset for pagination
    definition: str
    definition_version: str
    title: str
    status: str
    labels: str  # JSON list
    tags: str  # JSON list (the definition's tags)
    parameters: str  # JSON object
    steps_total: int
    steps_done: int
    current_steps: str  # JSON list of step ids being processed, in step order
    progress: float  # percent of steps completed or skipped
    started_at: float
    ended_at: float | None
    updated_at: float
    version: int
    started_by: str | None
    reason: str | None


class StepRow(msgspec.Struct, gc=False):
    workflow_id: str
    step_id: str
    step_order: int
    job_type: str
    status: str
    reason: str | None
    jobs_total: int  # every attempt of every fan-out item
    n_queued: int
    n_processing: int
    n_completed: int
    n_error: int
    n_retrying: int
    n_retry_requested: int
    n_stopped: int
    n_unroutable: int
    started_at: float | None
    ended_at: float | None
    updated_at: float | None


class JobRow(msgspec.Struct, gc=False):
    job_id: str
    workflow_id: str
    step_id: str
    idx: int
    attempt: int
    job_type: str
    status: str
    seq: int  # notification id of JobSubmitted
    priority: int
    submitted_at: float
    not_before: float
    started_at: float | None
    ended_at: float | None
    updated_at: float
    progression: int
    message: str | None
    worker: str | None
    error: str | None
    error_kind: str | None
    execution_duration: float | None
    next_job_id: str | None


JOB_COUNT_FIELD: dict[str, str] = {status: f"n_{status}" for status in JOB_STATUSES}  # StepRow counters


def _columns(struct: type[msgspec.Struct], kinds: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """Column kinds from the Struct's annotations: str -> text, int -> int, float -> real."""
    out = []
    for field in msgspec.structs.fields(struct):
        annotation = str(field.type)
        kind = "text" if "str" in annotation else "real" if "float" in annotation else "int"
        out.append((field.name, kinds.get(field.name, kind)))
    return tuple(out)


WORKFLOWS = Table(
    "sf_workflows",
    _columns(WorkflowRow, {}),
    key=("seq",),
    unique=("workflow_id",),
    indexes=(("status", "seq"), ("definition", "seq"), ("started_at",)),
)
LABELS = Table(
    "sf_workflow_labels",
    (("label", "text"), ("seq", "int"), ("workflow_id", "text")),
    key=("label", "seq"),
)
STEPS = Table("sf_steps", _columns(StepRow, {}), key=("workflow_id", "step_id"))
JOBS = Table(
    "sf_jobs",
    _columns(JobRow, {}),
    key=("seq",),
    unique=("job_id",),
    # submitted_at, ended_at: the time bins of `stepflow.projections.timeline`
    indexes=(("workflow_id",), ("status", "seq"), ("job_type", "seq"), ("submitted_at",), ("ended_at",)),
)
