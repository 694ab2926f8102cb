"""Workflow routes: start, list, show, history, and the operator commands."""

from __future__ import annotations

import uuid
from typing import Any
from uuid import UUID

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stepflow.adapters.http import rights
from stepflow.adapters.http.errors import ApiError, decode_body, decode_query, json_response
from stepflow.adapters.http.schemas import (
    BatchStarted,
    BatchStartRequest,
    Done,
    History,
    Started,
    StartRequest,
    StepView,
    StopRequest,
    WorkflowList,
    WorkflowQuery,
    WorkflowView,
)
from stepflow.adapters.http.services import READ_YOUR_WRITES_S, Services
from stepflow.engine import commands as cmd
from stepflow.engine import events as ev
from stepflow.engine.application import Start
from stepflow.engine.definitions import DefinitionError, WorkflowDefinition
from stepflow.engine.parameters import resolve_parameters
from stepflow.engine.statuses import WORKFLOW_STATUSES
from stepflow.engine.workflow import Rejected
from stepflow.projections import queries
from stepflow.projections.history import timeline

IDEMPOTENCY_NAMESPACE = UUID("6c1f3a0e-2b7d-4f51-9e0c-4a8d2b6e7f13")
_start_decoder = msgspec.json.Decoder(StartRequest)
_stop_decoder = msgspec.json.Decoder(StopRequest)
_batch_decoder = msgspec.json.Decoder(BatchStartRequest)


def services_of(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def statuses(text: str | None, known: tuple[str, ...], field: str = "query.status") -> list[str] | None:
    if not text:
        return None
    values = [s.strip() for s in text.split(",") if s.strip()]
    for value in values:
        if value not in known:
            raise ApiError(422, f"unknown status {value!r}; one of {', '.join(known)}", field)
    return values or None


def workflow_id_of(request: Request) -> str:
    raw = request.path_params["workflow_id"]
    try:
        return str(UUID(raw))
    except ValueError:
        raise ApiError(422, f"not a workflow id (a UUID): {raw[:60]!r}", "path.workflow_id") from None


async def visible_workflow(request: Request, action: str = "view") -> tuple[Services, Any, str, WorkflowDefinition]:
    """The workflow named in the path, its definition, after auth and the action's right."""
    s = services_of(request)
    principal = rights.authenticate(request, s)
    workflow_id = workflow_id_of(request)
    definition = await s.workflow_definition(workflow_id)
    if definition is None:
        raise ApiError(404, f"unknown workflow {workflow_id}", "path.workflow_id")
    await rights.require(request, s, principal, action, definition, workflow_id)
    return s, principal, workflow_id, definition


async def views_after(s: Services, position: int) -> None:
    """`?after=`: a listing that must show the caller's own write (a start answers after its
    commit, before the views have it) waits until the views have applied that position. Any
    position this log gave is at most its end; one past it (another store's) waits for the end."""
    if position <= s.views_at:  # (0, the default, always is)
        return
    end = await s.read(s.engine.max_notification_id)
    if not await s.views_reach(min(position, end), READ_YOUR_WRITES_S):
        raise ApiError(503, f"views are behind the log: position {position} not applied within {READ_YOUR_WRITES_S:g} s")


async def list_workflows(request: Request) -> Response:
    s = services_of(request)
    principal = rights.authenticate(request, s)
    q = decode_query(request, WorkflowQuery)
    await views_after(s, q.after)
    page = await s.read(queries.list_workflows, s.store, status=statuses(q.status, WORKFLOW_STATUSES),
                        definition=q.definition, label=q.label, limit=q.limit, cursor=q.cursor,
                        oldest_first=q.order == "oldest")
    definitions = await s.workflow_definitions(item.workflow_id for item in page.items)
    items = [item for item in page.items
             if item.workflow_id in definitions and rights.allowed(principal, definitions[item.workflow_id], "view")]
    return json_response(WorkflowList(items=tuple(items), next_cursor=page.next_cursor,
                                      hidden=len(page.items) - len(items)))


async def start_workflow(request: Request) -> Response:
    s = services_of(request)
    principal = rights.authenticate(request, s)
    body = await decode_body(request, _start_decoder)
    definition = s.catalog.get(body.definition, body.version)
    if definition is None:
        if s.catalog.get(body.definition) is None:
            raise ApiError(404, f"no stored definition {body.definition!r}", "$.definition")
        raise ApiError(404, f"definition {body.definition!r} has no version {body.version!r}", "$.version")
    await rights.require(request, s, principal, "create", definition)
    options: dict[str, Any] = {"labels": body.labels, "actor": principal.user}
    key = request.headers.get("idempotency-key")
    if key:
        if len(key) > 200:
            raise ApiError(422, "Idempotency-Key is longer than 200 characters", "header.Idempotency-Key")
        options["workflow_id"] = uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{principal.user}\0{key}")
        options["cause"] = f"http:{principal.user}:{key}"
    try:
        workflow_id, position = await s.start(definition, dict(body.parameters), **options)
    except DefinitionError as error:
        raise ApiError(422, error.reason, error.path) from None
    except Rejected as error:
        raise ApiError(409, str(error)) from None
    if key:
        await _same_request_or_conflict(s, workflow_id, key, definition, dict(body.parameters), body.labels)
    started = Started(workflow_id=str(workflow_id), definition=definition.identifier, version=definition.version,
                      notification_id=position)
    return json_response(started, 201, headers={"Location": f"/api/workflows/{workflow_id}"})


async def start_workflows(request: Request) -> Response:
    """`POST /api/workflows:batch`: every item is checked (definition, right, parameters) before
    anything is stored, then all are stored in one transaction. With an `Idempotency-Key`, item
    i gets the id the key and its index name, so the same request repeated starts nothing new."""
    s = services_of(request)
    principal = rights.authenticate(request, s)
    body = await decode_body(request, _batch_decoder)
    key = request.headers.get("idempotency-key")
    if key and len(key) > 200:
        raise ApiError(422, "Idempotency-Key is longer than 200 characters", "header.Idempotency-Key")
    definitions: list[WorkflowDefinition] = []
    for i, item in enumerate(body.starts):
        definition = s.catalog.get(item.definition, item.version)
        if definition is None:
            if s.catalog.get(item.definition) is None:
                raise ApiError(404, f"no stored definition {item.definition!r}", f"$.starts[{i}].definition")
            raise ApiError(404, f"definition {item.definition!r} has no version {item.version!r}",
                           f"$.starts[{i}].version")
        definitions.append(definition)
    checked: set[tuple[str, str]] = set()
    for definition in definitions:
        if (definition.identifier, definition.version) not in checked:
            await rights.require(request, s, principal, "create", definition)
            checked.add((definition.identifier, definition.version))
    starts = []
    for i, (item, definition) in enumerate(zip(body.starts, definitions, strict=True)):
        try:
            resolve_parameters(definition, item.parameters)  # as the engine will: refuse before storing any
        except DefinitionError as error:
            raise ApiError(422, error.reason, error.path.replace("$", f"$.starts[{i}]", 1)) from None
        options: dict[str, Any] = {}
        if key:
            options["workflow_id"] = uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{principal.user}\0{key}\0{i}")
            options["cause"] = f"http:{principal.user}:{key}#{i}"
        starts.append(Start(definition=definition, parameters=dict(item.parameters), labels=item.labels,
                            actor=principal.user, **options))
    answers, position = await s.start_many(starts)
    for i, answer in enumerate(answers):
        if isinstance(answer, DefinitionError):
            raise ApiError(422, answer.reason, answer.path.replace("$", f"$.starts[{i}]", 1))
        if isinstance(answer, Rejected):
            raise ApiError(409, f"start {i}: {answer}", f"$.starts[{i}]")
        if isinstance(answer, Exception):
            raise answer
    if key:
        for i, (item, definition, answer) in enumerate(zip(body.starts, definitions, answers, strict=True)):
            assert isinstance(answer, UUID)
            try:
                await _same_request_or_conflict(s, answer, key, definition, dict(item.parameters), item.labels)
            except ApiError as error:
                raise ApiError(409, f"start {i}: {error.message}", error.field) from None
    items = tuple(Started(workflow_id=str(answer), definition=definition.identifier, version=definition.version,
                          notification_id=position) for answer, definition in zip(answers, definitions, strict=True))
    return json_response(BatchStarted(items=items, notification_id=position), 201)


async def _same_request_or_conflict(s: Services, workflow_id: UUID, key: str, definition: WorkflowDefinition,
                                    parameters: dict[str, Any], labels: tuple[str, ...]) -> None:
    """A repeated `Idempotency-Key` gets the workflow it started only if the request is the same
    one (definition, version, parameters with their defaults, labels); another body under the
    same key is a 409, not a silent answer about a workflow the caller did not ask for."""
    first = await s.read(_started_event, s.engine, workflow_id)
    if first is None:
        return
    same = (first.definition.identifier == definition.identifier and first.definition.version == definition.version
            and first.labels == tuple(labels) and first.parameters == resolve_parameters(definition, parameters))
    if not same:
        raise ApiError(409, f"Idempotency-Key {key[:60]!r} was already used for another request, which started "
                            f"workflow {workflow_id} ({first.definition.identifier} {first.definition.version}); "
                            "repeat that request's body to get it again, or use a new key to start another workflow",
                       "header.Idempotency-Key")


def _started_event(engine: Any, workflow_id: UUID) -> ev.WorkflowStarted | None:
    first = next(iter(engine.events.get(workflow_id, limit=1)), None)
    return first if isinstance(first, ev.WorkflowStarted) else None


async def get_workflow(request: Request) -> Response:
    s, principal, workflow_id, definition = await visible_workflow(request)
    detail = await s.read(queries.get_workflow, s.store, workflow_id)
    if detail is None:  # stored, not projected yet
        position = await s.settled()
        try:
            detail = await s.read(queries.get_workflow, s.store, workflow_id, wait_for=position, timeout=5.0)
        except queries.NotCaughtUp as error:
            raise ApiError(503, f"views are behind the log: {error}") from None
        if detail is None:
            raise ApiError(404, f"unknown workflow {workflow_id}", "path.workflow_id")
    steps = []
    for info in detail.steps:
        extra: dict[str, Any]
        try:
            step = definition.step(info.step_id)
            extra = {"label": step.label, "parents": step.parents, "mode": step.mode}
        except KeyError:
            extra = {"label": "", "parents": (), "mode": "job"}
        steps.append(StepView(**msgspec.structs.asdict(info), **extra))
    view = WorkflowView(workflow=detail.workflow, steps=tuple(steps), jobs=detail.jobs,
                        can=rights.can(principal, definition))
    return json_response(view)


async def workflow_history(request: Request) -> Response:
    s, _, workflow_id, _ = await visible_workflow(request)
    events = await s.read(s.engine.history, UUID(workflow_id))
    return json_response(History(workflow_id=workflow_id, items=tuple(timeline(events))))


async def _command(request: Request, action: str, build: Any, job_id: str | None = None,
                   decoder: msgspec.json.Decoder[Any] | None = None) -> Response:
    s, principal, workflow_id, _ = await visible_workflow(request, action)
    body = await decode_body(request, decoder, empty_ok=True) if decoder is not None else None
    command: cmd.Command = build(UUID(workflow_id), principal.user, body)
    try:
        position = await s.command(command)
    except Rejected as error:
        if "has no job" in str(error):
            raise ApiError(404, str(error), "path.job_id") from None
        raise ApiError(409, str(error)) from None
    return json_response(Done(command=type(command).__name__, workflow_id=workflow_id, job_id=job_id,
                              notification_id=position))


async def stop_workflow(request: Request) -> Response:
    return await _command(request, "abort", lambda w, a, body: cmd.StopWorkflow(workflow_id=w, actor=a,
                                                                                reason=body.reason),
                          decoder=_stop_decoder)


async def pause_workflow(request: Request) -> Response:
    return await _command(request, "update", lambda w, a, _: cmd.PauseWorkflow(workflow_id=w, actor=a))


async def resume_workflow(request: Request) -> Response:
    return await _command(request, "update", lambda w, a, _: cmd.ResumeWorkflow(workflow_id=w, actor=a))


async def delete_workflow(request: Request) -> Response:
    return await _command(request, "delete", lambda w, a, _: cmd.DeleteWorkflow(workflow_id=w, actor=a))


async def retry_job(request: Request) -> Response:
    job_id = request.path_params["job_id"]
    if not 1 <= len(job_id) <= 100:
        raise ApiError(422, "not a job id", "path.job_id")
    return await _command(request, "retry", lambda w, a, _: cmd.RetryJob(workflow_id=w, actor=a, job_id=job_id),
                          job_id=job_id)
