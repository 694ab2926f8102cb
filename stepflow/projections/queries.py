"""Queries over the views, for the CLI and the HTTP API: plain functions returning Structs.

Every query of a projected view takes `wait_for=<notification id>`: it first waits (up to
`timeout` seconds, else `NotCaughtUp`) until the view has applied that position, which is
how a caller reads its own writes. After `engine.command(...)`, `engine.max_notification_id()`
is a position that includes the command's events.

Listings use keyset pagination on the notification id that created the row (`seq`): newest
first by default, a page is `seq < cursor`, so rows inserted meanwhile (always with a higher
seq) never shift, repeat or hide rows of later pages.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from stepflow.projections.job_stats import STATS, percentile
from stepflow.projections.models import (
    JobInfo,
    JobPage,
    JobTypeStats,
    WorkerInfo,
    WorkflowDetail,
    WorkflowPage,
)
from stepflow.projections.results import dt, job_info, step_info, summary
from stepflow.projections.rows import JOBS, STEPS, WORKFLOWS, JobRow, StepRow, WorkflowRow
from stepflow.projections.store import ViewStore, fetch_in
from stepflow.projections.worker_orders import ORDERS, OrderRow
from stepflow.projections.workers import GONE_AFTER_S, WORKERS, WorkerRow

DEFAULT_TIMEOUT = 10.0
_decode_histogram = msgspec.json.Decoder(dict[int, int])


class NotCaughtUp(TimeoutError):
    """The view did not reach the requested position in time."""


class BadCursor(ValueError):
    pass


def wait_for_views(store: ViewStore, views: Sequence[str], notification_id: int | None,
                   timeout: float = DEFAULT_TIMEOUT) -> None:
    if notification_id is not None and not store.wait(views, notification_id, timeout):
        positions = store.positions(views)
        raise NotCaughtUp(f"views {positions} did not reach notification {notification_id} in {timeout:g}s")


def _cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        return int(cursor)
    except ValueError:
        raise BadCursor(f"not a cursor: {cursor!r}") from None


def _in(column: str, values: str | Sequence[str]) -> tuple[str, list[str]]:
    values = [values] if isinstance(values, str) else list(values)
    return f"{column} IN ({', '.join('?' * len(values))})", values


# --- workflows ------------------------------------------------------------------------


def list_workflows(
    store: ViewStore, *, status: str | Sequence[str] | None = None, definition: str | None = None,
    label: str | None = None, started_after: datetime | None = None, started_before: datetime | None = None,
    limit: int = 50, cursor: str | None = None, oldest_first: bool = False, include_deleted: bool = False,
    wait_for: int | None = None, timeout: float = DEFAULT_TIMEOUT,
) -> WorkflowPage:
    """Workflows, newest first, filtered; `include_deleted` when no status is asked for."""
    wait_for_views(store, ["workflows"], wait_for, timeout)
    cols = ", ".join(f"w.{c}" for c in WORKFLOWS.names)
    sql = f"SELECT {cols} FROM sf_workflows w"
    where: list[str] = []
    params: list[Any] = []
    if label is not None:
        sql = f"SELECT {cols} FROM sf_workflow_labels l JOIN sf_workflows w ON w.seq = l.seq"
        where.append("l.label = ?")
        params.append(label)
    if status:
        clause, values = _in("w.status", status)
        where.append(clause)
        params += values
    elif not include_deleted:
        where.append("w.status <> 'deleted'")
    if definition is not None:
        where.append("w.definition = ?")
        params.append(definition)
    if started_after is not None:
        where.append("w.started_at >= ?")
        params.append(started_after.timestamp())
    if started_before is not None:
        where.append("w.started_at < ?")
        params.append(started_before.timestamp())
    after = _cursor(cursor)
    key = "l.seq" if label is not None else "w.seq"
    if after is not None:
        where.append(f"{key} > ?" if oldest_first else f"{key} < ?")
        params.append(after)
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {key} {'ASC' if oldest_first else 'DESC'} LIMIT ?"
    params.append(limit + 1)
    with store.read() as tx:
        rows = tx.query(sql, params)
    items = tuple(summary(WorkflowRow(*row)) for row in rows[:limit])
    more = len(rows) > limit
    return WorkflowPage(items=items, next_cursor=str(items[-1].seq) if more and items else None)


def get_workflow(store: ViewStore, workflow_id: Any, *, wait_for: int | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> WorkflowDetail | None:
    """One workflow with its steps (in order) and jobs (by step, index, attempt); None if unknown."""
    wait_for_views(store, ["workflows"], wait_for, timeout)
    wid = str(workflow_id)
    with store.read() as tx:
        found = tx.query(f"{WORKFLOWS.select()} WHERE workflow_id = ?", (wid,))
        if not found:
            return None
        steps = [StepRow(*r) for r in tx.query(f"{STEPS.select()} WHERE workflow_id = ?", (wid,))]
        jobs = [JobRow(*r) for r in tx.query(f"{JOBS.select()} WHERE workflow_id = ?", (wid,))]
    order = {s.step_id: s.step_order for s in steps}
    steps.sort(key=lambda s: s.step_order)
    jobs.sort(key=lambda j: (order.get(j.step_id, 0), j.idx, j.attempt))
    return WorkflowDetail(workflow=summary(WorkflowRow(*found[0])), steps=tuple(map(step_info, steps)),
                          jobs=tuple(map(job_info, jobs)))


def find_workflow_ids(store: ViewStore, prefix: str, limit: int = 10) -> list[str]:
    """Workflow ids starting with `prefix` (a short id typed by a person)."""
    with store.read() as tx:
        rows = tx.query("SELECT workflow_id FROM sf_workflows WHERE workflow_id LIKE ? ORDER BY seq LIMIT ?",
                        (_like_prefix(prefix), limit))
    return [r[0] for r in rows]


def find_job_ids(store: ViewStore, prefix: str, limit: int = 10) -> list[str]:
    """Job ids starting with `prefix`."""
    with store.read() as tx:
        rows = tx.query("SELECT job_id FROM sf_jobs WHERE job_id LIKE ? ORDER BY seq LIMIT ?",
                        (_like_prefix(prefix), limit))
    return [r[0] for r in rows]


def _like_prefix(prefix: str) -> str:
    return prefix.lower().replace("%", "").replace("_", "") + "%"


def get_job(store: ViewStore, job_id: str, *, wait_for: int | None = None,
            timeout: float = DEFAULT_TIMEOUT) -> JobInfo | None:
    wait_for_views(store, ["workflows"], wait_for, timeout)
    with store.read() as tx:
        rows = tx.query(f"{JOBS.select()} WHERE job_id = ?", (job_id,))
    return job_info(JobRow(*rows[0])) if rows else None


def list_jobs(
    store: ViewStore, *, status: str | Sequence[str] | None = None, job_type: str | None = None,
    workflow_id: Any = None, limit: int = 100, cursor: str | None = None,
    wait_for: int | None = None, timeout: float = DEFAULT_TIMEOUT,
) -> JobPage:
    """Jobs (every attempt), newest submission first, by status and/or type."""
    wait_for_views(store, ["workflows"], wait_for, timeout)
    where: list[str] = []
    params: list[Any] = []
    if status:
        clause, values = _in("status", status)
        where.append(clause)
        params += values
    if job_type is not None:
        where.append("job_type = ?")
        params.append(job_type)
    if workflow_id is not None:
        where.append("workflow_id = ?")
        params.append(str(workflow_id))
    after = _cursor(cursor)
    if after is not None:
        where.append("seq < ?")
        params.append(after)
    sql = JOBS.select() + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY seq DESC LIMIT ?"
    params.append(limit + 1)
    with store.read() as tx:
        rows = tx.query(sql, params)
    items = tuple(job_info(JobRow(*r)) for r in rows[:limit])
    return JobPage(items=items, next_cursor=str(items[-1].seq) if len(rows) > limit and items else None)


# --- workers and statistics -------------------------------------------------------------


def list_workers(store: ViewStore, *, now: datetime | None = None, gone_after_s: float = GONE_AFTER_S,
                 include_gone: bool = True, job_type: str | None = None) -> list[WorkerInfo]:
    """Known workers, by job type then instance; `status` says alive, paused, gone or terminated.

    Paused: alive, and its last pause order (`WorkerOrdered`, the `worker_orders` view) came
    after its last resume, or it said so itself (activity `Suspended`, as some SDKs do).
    `running_jobs`: the jobs in progress whose last progress report came from it (the job
    view; a job that has not reported progress yet names no worker).
    """
    moment = now.timestamp() if now is not None else time.time()
    sql = WORKERS.select()
    params: list[Any] = []
    if job_type is not None:
        sql += " WHERE job_type = ?"
        params.append(job_type)
    with store.read() as tx:
        rows = [WorkerRow(*r) for r in tx.query(sql + " ORDER BY job_type, instance_id", params)]
        orders = {r[0]: OrderRow(*r) for r in fetch_in(tx, ORDERS.select(), "instance_id",
                                                       [row.instance_id for row in rows])}
        running: dict[str, list[str]] = {}
        for worker, job_id in tx.query("SELECT worker, job_id FROM sf_jobs WHERE status = 'processing' "
                                       "AND worker IS NOT NULL ORDER BY seq"):
            running.setdefault(worker, []).append(job_id)
    out = []
    for row in rows:
        order = orders.get(row.instance_id)
        paused = (order is not None and order.paused_at is not None) or row.activity == "Suspended"
        status = ("terminated" if row.terminated_at is not None
                  else "gone" if row.last_seen < moment - gone_after_s
                  else "paused" if paused else "alive")
        if status not in ("alive", "paused") and not include_gone:
            continue
        out.append(WorkerInfo(
            instance_id=row.instance_id, job_type=row.job_type, label=row.label, description=row.description,
            version=row.version, sdk_version=row.sdk_version, direct_queue=row.direct_queue, status=status,
            activity=row.activity, current_job=row.current_job, first_seen=dt(row.first_seen),  # type: ignore[arg-type]
            last_seen=dt(row.last_seen), terminated_at=dt(row.terminated_at),  # type: ignore[arg-type]
            running_jobs=tuple(running.get(row.instance_id, ())),
            last_order=order.last_order if order else None, ordered_by=order.ordered_by if order else None,
            ordered_at=dt(order.ordered_at) if order else None,
        ))
    return out


def job_stats(store: ViewStore, *, job_type: str | None = None, wait_for: int | None = None,
              timeout: float = DEFAULT_TIMEOUT) -> list[JobTypeStats]:
    """Per job type: outcomes, success rate and duration percentiles of completed jobs."""
    wait_for_views(store, ["job_stats"], wait_for, timeout)
    sql = STATS.select() + (" WHERE job_type = ?" if job_type is not None else "") + " ORDER BY job_type"
    with store.read() as tx:
        rows = tx.query(sql, (job_type,) if job_type is not None else ())
    out = []
    for (name, submitted, retries, completed, errored, timed_out, unroutable, stopped,
         count, total, longest, histogram_json, _) in rows:
        histogram = _decode_histogram.decode(histogram_json)
        ended = completed + errored + timed_out + unroutable + stopped
        out.append(JobTypeStats(
            job_type=name, submitted=submitted, retries=retries, completed=completed, errored=errored,
            timed_out=timed_out, unroutable=unroutable, stopped=stopped, ended=ended,
            success_rate=completed / ended if ended else None,
            duration_mean_s=total / count if count else None,
            duration_p50_s=_capped(percentile(histogram, 0.50), longest),
            duration_p95_s=_capped(percentile(histogram, 0.95), longest),
            duration_max_s=longest if count else None,
        ))
    return out


def _capped(estimate: float | None, longest: float) -> float | None:
    """A bucket's middle can exceed the longest duration seen; never report more."""
    return None if estimate is None else min(estimate, longest)
