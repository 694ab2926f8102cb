"""Read the read models from Python: workflows, their steps and jobs, job statistics, workers.

    from stepflow.queries import open_views

    with open_views("sqlite:///stepflow.sqlite") as views:    # or postgresql://..., or an engine
        for workflow in views.workflows(status="error").items:
            print(workflow.workflow_id, workflow.reason)
        detail = views.workflow(workflow_id)                   # WorkflowDetail, or None

The views are tables derived from the event log, beside it in the same store; this is what
`stepflow workflows`, `show`, `jobs`, `stats` and `workers` print, as the same frozen msgspec
Structs (`msgspec.json.encode` turns any of them into the JSON of `--json`). Like those
commands, `open_views` first applies the events stored since the views were last brought up
to date, in this process, so it reads what is stored even when no backend or `stepflow
project` keeps the views current. After that the views stay as they were: call `refresh()`
to apply newer events, or `wait_for(position)` to read your own writes.

A `Views` holds a store connection: use it as a context manager or call `close()`. Its
calls block (they are short reads); from async code, call them through `asyncio.to_thread`
when the event loop must not wait.

This module is a façade over `stepflow.projections` (queries, runner, view store), whose
layout may change; what is named here stays.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from uuid import UUID

from stepflow.adapters.persistence import open_engine
from stepflow.engine.application import WorkflowEngine
from stepflow.projections import ProjectionRunner, WorkersView, queries
from stepflow.projections.models import (
    JobInfo,
    JobPage,
    JobTypeStats,
    StepInfo,
    WorkerInfo,
    WorkflowDetail,
    WorkflowPage,
    WorkflowSummary,
)
from stepflow.projections.queries import DEFAULT_TIMEOUT, BadCursor, NotCaughtUp
from stepflow.projections.timeline import (
    DurationStats,
    Timeline,
    TimelineBin,
    TooManyBins,
    timeline,
)
from stepflow.projections.workers import GONE_AFTER_S

__all__ = [
    "BadCursor",
    "DurationStats",
    "JobInfo",
    "JobPage",
    "JobTypeStats",
    "NotCaughtUp",
    "StepInfo",
    "Timeline",
    "TimelineBin",
    "TooManyBins",
    "Views",
    "WorkerInfo",
    "WorkflowDetail",
    "WorkflowPage",
    "WorkflowSummary",
    "open_views",
]


def open_views(store: str | WorkflowEngine | None = None, *, catch_up: bool = True) -> Views:
    """The views of a store, given by URL (default: `$STEPFLOW_STORE`, else `stepflow.sqlite`
    in the data directory, see `stepflow config`) or as an open engine (which stays open after `close()`).

    `catch_up=False` reads the views as they are, like the CLI's `--no-catch-up`. An engine on
    `memory://` has its views in memory: pass that engine, not its URL, to read them.
    """
    if isinstance(store, WorkflowEngine):
        return Views(store, own_engine=False, catch_up=catch_up)
    engine = open_engine(store)
    try:
        return Views(engine, own_engine=True, catch_up=catch_up)
    except BaseException:
        engine.close()
        raise


class Views:
    """Queries over one store's views. Listings are newest first, in pages: pass a page's
    `next_cursor` back as `cursor` for the next one (None on the last page)."""

    def __init__(self, engine: WorkflowEngine, *, own_engine: bool = False, catch_up: bool = True) -> None:
        self.engine = engine
        self._own_engine = own_engine
        self._runner = ProjectionRunner(engine)
        self._store = self._runner.store
        try:
            WorkersView(self._store)  # creates the workers table if no backend ever did
            if catch_up:
                self.refresh()
        except BaseException:
            self._runner.close()
            raise

    def refresh(self) -> int:
        """Apply the events stored since the last refresh; return how many were read."""
        return self._runner.run_once()

    def wait_for(self, position: int | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Return once every view has applied the log up to `position` (a notification id,
        e.g. `engine.max_notification_id()` after a command; default: the end of the log now).
        Applies what is stored first, then waits for the rest (written by other processes);
        raises `NotCaughtUp` after `timeout` seconds."""
        target = self.engine.max_notification_id() if position is None else position
        self.refresh()
        queries.wait_for_views(self._store, self._runner.names, target, timeout)

    def workflows(self, *, status: str | Sequence[str] | None = None, definition: str | None = None,
                  label: str | None = None, started_after: datetime | None = None,
                  started_before: datetime | None = None, limit: int = 50, cursor: str | None = None,
                  oldest_first: bool = False, include_deleted: bool = False) -> WorkflowPage:
        """Workflows, filtered by status (one or several), definition identifier, label (or
        definition tag) and start time. Deleted ones only when asked for by status or
        `include_deleted`. A bad `cursor` raises `BadCursor`."""
        return queries.list_workflows(
            self._store, status=status, definition=definition, label=label, started_after=started_after,
            started_before=started_before, limit=limit, cursor=cursor, oldest_first=oldest_first,
            include_deleted=include_deleted,
        )

    def workflow(self, workflow_id: UUID | str) -> WorkflowDetail | None:
        """One workflow with its steps (in order) and jobs (by step, index, attempt); None if unknown."""
        return queries.get_workflow(self._store, workflow_id)

    def jobs(self, *, status: str | Sequence[str] | None = None, job_type: str | None = None,
             workflow_id: UUID | str | None = None, limit: int = 100, cursor: str | None = None) -> JobPage:
        """Jobs, every attempt, newest submission first."""
        return queries.list_jobs(self._store, status=status, job_type=job_type, workflow_id=workflow_id,
                                 limit=limit, cursor=cursor)

    def job(self, job_id: str) -> JobInfo | None:
        """One job attempt by its id; None if unknown."""
        return queries.get_job(self._store, job_id)

    def job_type_stats(self, job_type: str | None = None) -> list[JobTypeStats]:
        """Per job type: outcomes, success rate and duration percentiles of completed jobs."""
        return queries.job_stats(self._store, job_type=job_type)

    def timeline(self, *, bin: str = "hour", since: datetime | None = None, until: datetime | None = None,
                 job_type: str | None = None, definition: str | None = None) -> Timeline:
        """Workflows and jobs per status, and job-type durations (count, p50, p95), per `bin`
        (minute, hour or day, aligned to UTC) from `since` to `until` (default: the last 60
        minutes, 24 hours or 30 days up to now). Every bin is there, empty ones too. A range
        of more than 1,500 bins raises `TooManyBins`; `since` after `until`, ValueError."""
        return timeline(self._store, bin=bin, since=since, until=until, job_type=job_type, definition=definition)

    def workers(self, *, alive_only: bool = False, gone_after_s: float = GONE_AFTER_S,
                job_type: str | None = None) -> list[WorkerInfo]:
        """Workers known from their announcements; `status` is alive, gone (silent for
        `gone_after_s`) or terminated. Written by a backend as workers announce themselves,
        so not part of the log: `refresh` does not change it."""
        return queries.list_workers(self._store, gone_after_s=gone_after_s, include_gone=not alive_only,
                                    job_type=job_type)

    def close(self) -> None:
        self._runner.close()
        if self._own_engine:
            self.engine.close()

    def __enter__(self) -> Views:  # noqa: PYI034 (final in practice)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
