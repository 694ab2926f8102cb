"""Request and response bodies of the HTTP API: msgspec Structs, also the OpenAPI schemas.

Read models (`WorkflowSummary`, `JobInfo`, `WorkerInfo`, `JobTypeStats`, ...) are the
projections' own Structs; what is only the API's is here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from stepflow.engine.definitions import ParameterSpec, WorkflowDefinition
from stepflow.engine.statuses import JOB_STATUSES, WORKFLOW_STATUSES
from stepflow.projections.history import TimelineEntry
from stepflow.projections.models import JobInfo, JobTypeStats, StepInfo, WorkerInfo, WorkflowSummary

Name = Annotated[str, Meta(min_length=1, max_length=200)]
Label = Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]
Limit = Annotated[int, Meta(ge=1, le=500)]
Reason = Annotated[str, Meta(max_length=2000)]
After = Annotated[int, Meta(ge=0, le=2**62, description=(
    "a log position, e.g. a start's `notification_id`: answer once the views have applied it, to "
    "read your own writes (503 if they have not within 5 s; a position past the end of the log waits for its end)"))]


def _one_or_more(values: tuple[str, ...]) -> str:
    one = "(" + "|".join(values) + ")"
    return f"^{one}(,{one})*$"


WorkflowStatuses = Annotated[str, Meta(pattern=_one_or_more(WORKFLOW_STATUSES),
                                       description="one status or several, comma-separated")]
JobStatuses = Annotated[str, Meta(pattern=_one_or_more(JOB_STATUSES),
                                  description="one status or several, comma-separated")]


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    status: int
    error: str
    message: str
    field: str | None = None


# --- requests -----------------------------------------------------------------------------


class StartRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    definition: Name
    version: Name | None = None
    parameters: dict[str, Any] = {}
    labels: Annotated[tuple[Label, ...], Meta(max_length=50)] = ()


MAX_BATCH_STARTS = 1000


class BatchStartRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Several starts stored in one transaction: all are checked first, and one bad item
    (its index in the error's field) stores none of them."""

    starts: Annotated[tuple[StartRequest, ...], Meta(min_length=1, max_length=MAX_BATCH_STARTS)]


class StopRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: Reason = ""


class WorkflowQuery(msgspec.Struct, frozen=True, kw_only=True):
    status: WorkflowStatuses | None = None
    definition: Name | None = None
    label: Label | None = None
    limit: Limit = 50
    cursor: Annotated[str, Meta(pattern=r"^[0-9]{1,18}$")] | None = None
    order: Literal["newest", "oldest"] = "newest"
    after: After = 0


class JobQuery(msgspec.Struct, frozen=True, kw_only=True):
    status: JobStatuses | None = None
    job_type: Name | None = None
    workflow_id: Annotated[str, Meta(pattern=r"^[0-9a-fA-F-]{32,36}$")] | None = None
    limit: Limit = 100
    cursor: Annotated[str, Meta(pattern=r"^[0-9]{1,18}$")] | None = None
    after: After = 0


class StatsQuery(msgspec.Struct, frozen=True, kw_only=True):
    job_type: Name | None = None


# Query fields that take one or several of a fixed list (comma-separated): checked before the
# Struct's pattern, so a wrong value is answered with the list of valid ones, not the regex.
QUERY_CHOICES: dict[type, dict[str, tuple[str, tuple[str, ...]]]] = {
    WorkflowQuery: {"status": ("workflow status", WORKFLOW_STATUSES)},
    JobQuery: {"status": ("job status", JOB_STATUSES)},
}


# --- responses ----------------------------------------------------------------------------


class Me(msgspec.Struct, frozen=True, kw_only=True):
    user: str
    groups: tuple[str, ...]
    admin: bool
    auth_enabled: bool


class Started(msgspec.Struct, frozen=True, kw_only=True):
    workflow_id: str
    definition: str
    version: str
    notification_id: int


class BatchStarted(msgspec.Struct, frozen=True, kw_only=True):
    """The started workflows, in the order of the request's `starts`."""

    items: tuple[Started, ...]
    notification_id: int  # a log position that includes every start of the batch


class Done(msgspec.Struct, frozen=True, kw_only=True):
    """An accepted command (recorded, or nothing to record: pausing a paused workflow)."""

    command: str
    workflow_id: str
    job_id: str | None = None
    notification_id: int


class StepView(StepInfo, frozen=True, kw_only=True):
    label: str
    parents: tuple[str, ...]
    mode: str


class WorkflowView(msgspec.Struct, frozen=True, kw_only=True):
    workflow: WorkflowSummary
    steps: tuple[StepView, ...]
    jobs: tuple[JobInfo, ...]
    can: tuple[str, ...]  # the actions this user may take on it


class WorkflowList(msgspec.Struct, frozen=True, kw_only=True):
    items: tuple[WorkflowSummary, ...]
    next_cursor: str | None
    hidden: int = 0  # rows of this page the user may not view


class JobList(msgspec.Struct, frozen=True, kw_only=True):
    items: tuple[JobInfo, ...]
    next_cursor: str | None
    hidden: int = 0


class History(msgspec.Struct, frozen=True, kw_only=True):
    workflow_id: str
    items: tuple[TimelineEntry, ...]


class DefinitionSummary(msgspec.Struct, frozen=True, kw_only=True):
    identifier: str
    version: str
    versions: tuple[str, ...]
    label: str
    tags: tuple[str, ...]
    parameters: tuple[ParameterSpec, ...]
    steps: int
    can: tuple[str, ...]


class DefinitionList(msgspec.Struct, frozen=True, kw_only=True):
    items: tuple[DefinitionSummary, ...]


class DefinitionView(msgspec.Struct, frozen=True, kw_only=True):
    definition: WorkflowDefinition
    versions: tuple[str, ...]
    can: tuple[str, ...]


class WorkerList(msgspec.Struct, frozen=True, kw_only=True):
    items: tuple[WorkerInfo, ...]
    can: tuple[str, ...] = ()  # the worker controls this user may use (the `workers` right)


class WorkerOrderDone(msgspec.Struct, frozen=True, kw_only=True):
    """A direct order sent to a worker (and recorded as `WorkerOrdered`). Sent, not done: the
    worker acts on it when it reads its direct queue; `GET /api/workers` shows the effect."""

    instance_id: str
    action: str  # status | pause | resume | stop
    order: str  # the protocol's direct order
    notification_id: int  # of the WorkerOrdered event


class Stats(msgspec.Struct, frozen=True, kw_only=True):
    workflows: dict[str, int]  # by status
    job_types: tuple[JobTypeStats, ...]


class Health(msgspec.Struct, frozen=True, kw_only=True):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = {}
