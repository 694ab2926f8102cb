"""Routes beside the workflows: who am I, definitions, jobs, workers, statistics, audit."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response

from stepflow.adapters.http import rights
from stepflow.adapters.http.api_workflows import services_of, statuses, views_after
from stepflow.adapters.http.errors import ApiError, decode_query, json_response
from stepflow.adapters.http.schemas import (
    DefinitionList,
    DefinitionSummary,
    DefinitionView,
    JobList,
    JobQuery,
    Me,
    Stats,
    StatsQuery,
    WorkerList,
)
from stepflow.adapters.worker_control import ACTIONS
from stepflow.engine.definitions import NotificationSpec, WorkflowDefinition
from stepflow.engine.statuses import JOB_STATUSES
from stepflow.projections import ViewStore, queries
from stepflow.projections.history import AuditEntry, audit

REDACTED = "<redacted>"


async def me(request: Request) -> Response:
    s = services_of(request)
    p = rights.authenticate(request, s)
    return json_response(Me(user=p.user, groups=p.groups, admin=p.admin, auth_enabled=s.auth.enabled))


async def list_definitions(request: Request) -> Response:
    s = services_of(request)
    principal = rights.authenticate(request, s)
    items = tuple(
        DefinitionSummary(identifier=d.identifier, version=d.version, versions=tuple(s.catalog.versions(d.identifier)),
                          label=d.label, tags=d.tags, parameters=d.parameters, steps=len(d.steps),
                          can=rights.can(principal, d))
        for d in s.catalog.latest() if rights.allowed(principal, d, "view")
    )
    return json_response(DefinitionList(items=items))


class _VersionQuery(msgspec.Struct, frozen=True, kw_only=True):
    version: Annotated[str, Meta(min_length=1, max_length=200)] | None = None


async def get_definition(request: Request) -> Response:
    s = services_of(request)
    principal = rights.authenticate(request, s)
    identifier = request.path_params["identifier"]
    q = decode_query(request, _VersionQuery)
    definition = s.catalog.get(identifier, q.version)
    if definition is None:
        raise ApiError(404, f"no stored definition {identifier!r}" + (f" version {q.version!r}" if q.version else ""),
                       "query.version" if q.version and s.catalog.get(identifier) else "path.identifier")
    await rights.require(request, s, principal, "view", definition)
    return json_response(DefinitionView(definition=redact(definition), versions=tuple(s.catalog.versions(identifier)),
                                        can=rights.can(principal, definition)))


def redact(definition: WorkflowDefinition) -> WorkflowDefinition:
    """Notification header values may hold credentials: never shown."""

    def spec(n: NotificationSpec) -> NotificationSpec:
        return msgspec.structs.replace(n, headers=dict.fromkeys(n.headers, REDACTED))

    steps = tuple(msgspec.structs.replace(st, notification=spec(st.notification)) if st.notification else st
                  for st in definition.steps)
    hooks = msgspec.structs.replace(definition.hooks, on_completed=tuple(map(spec, definition.hooks.on_completed)),
                                    on_error=tuple(map(spec, definition.hooks.on_error)))
    return msgspec.structs.replace(definition, steps=steps, hooks=hooks)


async def list_jobs(request: Request) -> Response:
    s = services_of(request)
    principal = rights.authenticate(request, s)
    q = decode_query(request, JobQuery)
    await views_after(s, q.after)
    page = await s.read(queries.list_jobs, s.store, status=statuses(q.status, JOB_STATUSES), job_type=q.job_type,
                        workflow_id=q.workflow_id.lower() if q.workflow_id else None, limit=q.limit, cursor=q.cursor)
    definitions = await s.workflow_definitions(job.workflow_id for job in page.items)
    items = [job for job in page.items
             if job.workflow_id in definitions and rights.allowed(principal, definitions[job.workflow_id], "view")]
    return json_response(JobList(items=tuple(items), next_cursor=page.next_cursor, hidden=len(page.items) - len(items)))


async def get_job(request: Request) -> Response:
    s = services_of(request)
    principal = rights.authenticate(request, s)
    job_id = request.path_params["job_id"]
    job = await s.read(queries.get_job, s.store, job_id) if len(job_id) <= 100 else None
    definition = await s.workflow_definition(job.workflow_id) if job is not None else None
    if job is None or definition is None:
        raise ApiError(404, f"unknown job {job_id[:100]}", "path.job_id")
    await rights.require(request, s, principal, "view", definition, job.workflow_id)
    return json_response(job)


async def list_workers(request: Request) -> Response:
    s = services_of(request)
    principal = rights.authenticate(request, s)
    can = ACTIONS if rights.may_control_workers(principal) and s.backend is not None else ()
    return json_response(WorkerList(items=tuple(await s.read(queries.list_workers, s.store)), can=can))


async def stats(request: Request) -> Response:
    s = services_of(request)
    rights.authenticate(request, s)
    q = decode_query(request, StatsQuery)
    by_type = await s.read(queries.job_stats, s.store, job_type=q.job_type)
    return json_response(Stats(workflows=await s.read(workflow_counts, s.store), job_types=tuple(by_type)))


def workflow_counts(store: ViewStore) -> dict[str, int]:
    with store.read() as tx:
        rows = tx.query("SELECT status, COUNT(*) FROM sf_workflows GROUP BY status")
    return {status: count for status, count in rows}


def worker_counts(store: ViewStore) -> list[tuple[str, str, int]]:
    """(job type, alive|gone|terminated, count), from the workers view."""
    counts: dict[tuple[str, str], int] = {}
    for worker in queries.list_workers(store):
        key = (worker.job_type or "", worker.status)
        counts[key] = counts.get(key, 0) + 1
    return [(t, st, n) for (t, st), n in sorted(counts.items())]


class AuditQuery(msgspec.Struct, frozen=True, kw_only=True):
    after: Annotated[int, Meta(ge=0, le=2**62)] = 0
    limit: Annotated[int, Meta(ge=1, le=1000)] = 100
    actor: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    event: Annotated[str, Meta(min_length=1, max_length=100)] | None = None


class AuditPage(msgspec.Struct, frozen=True, kw_only=True):
    items: tuple[AuditEntry, ...]
    next_after: int | None


def _audit_page(engine: object, q: AuditQuery) -> AuditPage:
    items: list[AuditEntry] = []
    last = q.after
    for entry in audit(engine, after=q.after, actor=q.actor):
        last = entry.notification_id
        if q.event is None or entry.event == q.event:
            items.append(entry)
        if len(items) >= q.limit:
            return AuditPage(items=tuple(items), next_after=last)
    return AuditPage(items=tuple(items), next_after=None)


async def audit_log(request: Request) -> Response:
    s = services_of(request)
    principal = rights.authenticate(request, s)
    await rights.require_admin(request, s, principal, "read the audit log")
    q = decode_query(request, AuditQuery)
    return json_response(await s.read(_audit_page, s.engine, q))


__all__ = ["audit_log", "get_definition", "get_job", "list_definitions", "list_jobs", "list_workers",
           "me", "stats"]
