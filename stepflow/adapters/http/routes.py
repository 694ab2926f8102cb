"""The API's routes, declared once: the app is built from this table and so is `/openapi.json`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stepflow.adapters.http import api_misc as m
from stepflow.adapters.http import api_workflows as w
from stepflow.adapters.http import metrics, rights
from stepflow.adapters.http import schemas as s
from stepflow.adapters.http import step_flow_api as sf
from stepflow.adapters.http.api_stats import TimelineQuery, stats_timeline
from stepflow.adapters.http.api_stream import stream_workflow
from stepflow.adapters.http.api_workers import order_worker
from stepflow.adapters.http.health import healthz, readyz
from stepflow.adapters.http.services import Services
from stepflow.projections.timeline import Timeline

Handler = Callable[[Request], Awaitable[Response]]
WORKFLOW_ID = ("workflow_id", {"type": "string", "format": "uuid"}, "a workflow id")
JOB_ID = ("job_id", {"type": "string", "minLength": 1, "maxLength": 100}, "a job id (every attempt has its own)")
INSTANCE_ID = ("instance_id", {"type": "string", "minLength": 1, "maxLength": 200}, "a worker's instance id")
WORKER_ACTION = ("action", {"type": "string", "enum": ["status", "pause", "resume", "stop"]},
                 ("status: ask for a status answer; pause: stop taking orders (stop_consuming_jobs); "
                 "resume: take orders again; stop: finish running jobs and exit (stop_worker)"))
STEP_FLOW_JOB_ID = ("job_id", {"type": "integer", "minimum": 0, "maximum": 2**64 - 1}, "an original Step Flow job id")
COMPAT = "compatibility"  # what the original Step Flow's worker SDK calls (step_flow_api)
RAW_TOKEN = {"error_text": {401: "no or unknown token (`Authorization: TOKEN`, as the SDK sends it, or `Bearer TOKEN`)"}}
IDENTIFIER = ("identifier", {"type": "string", "minLength": 1, "maxLength": 200}, "a definition identifier")


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    ok: tuple[int, Any]  # status and body type (None: no JSON body)
    query: type | None = None
    body: type | None = None
    body_required: bool = True
    path_params: tuple[tuple[str, dict[str, Any], str], ...] = ()
    errors: tuple[int, ...] = (401,)
    headers: tuple[tuple[str, str], ...] = ()  # request headers: (name, description)
    public: bool = False
    media_type: str = "application/json"
    extra: dict[str, Any] = field(default_factory=dict)


async def _metrics(request: Request) -> Response:
    s: Services = request.app.state.services
    if not request.app.state.settings.http_public_metrics:
        rights.authenticate(request, s)
    return Response(await metrics.collect(s), media_type=metrics.CONTENT_TYPE)


async def _openapi(request: Request) -> Response:
    # The document is generated from ENDPOINTS, so `openapi` imports this module and the app
    # hands the document over (`app.state.openapi`) instead of this module importing it back.
    return Response(msgspec.json.encode(request.app.state.openapi()), media_type="application/json")


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/api/me", m.me, "Who the bearer token names", "auth", (200, s.Me)),
    Endpoint("GET", "/api/definitions", m.list_definitions, "Stored definitions (latest version of each)",
             "definitions", (200, s.DefinitionList)),
    Endpoint("GET", "/api/definitions/{identifier}", m.get_definition, "One stored definition", "definitions",
             (200, s.DefinitionView), query=m._VersionQuery, path_params=(IDENTIFIER,), errors=(401, 403, 404, 422)),
    Endpoint("POST", "/api/workflows", w.start_workflow, "Start a workflow of a stored definition", "workflows",
             (201, s.Started), body=s.StartRequest, errors=(400, 401, 403, 404, 409, 413, 422),
             headers=(("Idempotency-Key", ("repeat a start safely: the same key and body start one workflow; "
                                          "the same key with another body is a 409")),),
             extra={"error_text": {409: "refused: the workflow exists, or the Idempotency-Key was used for "
                                        "another request"}}),
    Endpoint("POST", "/api/workflows:batch", w.start_workflows,
             "Start several workflows in one transaction (all checked first; none stored if one is bad)",
             "workflows", (201, s.BatchStarted), body=s.BatchStartRequest, errors=(400, 401, 403, 404, 409, 413, 422),
             headers=(("Idempotency-Key", ("repeat a batch safely: the same key and body start the same workflows "
                                          "(start i gets the id of the key and i); another body is a 409")),),
             extra={"error_text": {409: "refused: a start's workflow exists, or the Idempotency-Key was used for "
                                        "another request", 422: "a start is invalid: `field` names it "
                                        "(`$.starts[i]...`); nothing was stored"}}),
    Endpoint("GET", "/api/workflows", w.list_workflows, "Workflows, newest first, filtered and paginated",
             "workflows", (200, s.WorkflowList), query=s.WorkflowQuery, errors=(401, 422)),
    Endpoint("GET", "/api/workflows/{workflow_id}", w.get_workflow, "A workflow with its steps and jobs",
             "workflows", (200, s.WorkflowView), path_params=(WORKFLOW_ID,), errors=(401, 403, 404, 422, 503)),
    Endpoint("GET", "/api/workflows/{workflow_id}/history", w.workflow_history, "A workflow's events as a timeline",
             "workflows", (200, s.History), path_params=(WORKFLOW_ID,), errors=(401, 403, 404, 422)),
    Endpoint("GET", "/api/workflows/{workflow_id}/stream", stream_workflow,
             "Live updates of a workflow (server-sent events, ends when it ends)", "workflows", (200, None),
             path_params=(WORKFLOW_ID,), errors=(401, 403, 404, 422), media_type="text/event-stream"),
    Endpoint("POST", "/api/workflows/{workflow_id}/stop", w.stop_workflow, "Stop a workflow (right: abort)",
             "commands", (200, s.Done), body=s.StopRequest, body_required=False, path_params=(WORKFLOW_ID,),
             errors=(400, 401, 403, 404, 409, 413, 422)),
    Endpoint("POST", "/api/workflows/{workflow_id}/pause", w.pause_workflow, "Pause a workflow (right: update)",
             "commands", (200, s.Done), path_params=(WORKFLOW_ID,), errors=(401, 403, 404, 409, 422)),
    Endpoint("POST", "/api/workflows/{workflow_id}/resume", w.resume_workflow, "Resume a workflow (right: update)",
             "commands", (200, s.Done), path_params=(WORKFLOW_ID,), errors=(401, 403, 404, 409, 422)),
    Endpoint("DELETE", "/api/workflows/{workflow_id}", w.delete_workflow, "Delete a workflow (right: delete)",
             "commands", (200, s.Done), path_params=(WORKFLOW_ID,), errors=(401, 403, 404, 409, 422)),
    Endpoint("POST", "/api/workflows/{workflow_id}/jobs/{job_id}/retry", w.retry_job,
             "Retry an errored, stopped or unroutable job (right: retry)", "commands", (200, s.Done),
             path_params=(WORKFLOW_ID, JOB_ID), errors=(401, 403, 404, 409, 422)),
    Endpoint("GET", "/api/jobs", m.list_jobs, "Jobs (every attempt), newest first", "jobs", (200, s.JobList),
             query=s.JobQuery, errors=(401, 422)),
    Endpoint("GET", "/api/jobs/{job_id}", m.get_job, "One job attempt", "jobs", (200, s.JobInfo),
             path_params=(JOB_ID,), errors=(401, 403, 404)),
    Endpoint("GET", "/api/workers", m.list_workers, "Known workers", "workers", (200, s.WorkerList)),
    Endpoint("POST", "/api/workers/{instance_id}/{action}", order_worker,
             "Send a worker a control order (right: workers)", "workers", (202, s.WorkerOrderDone),
             path_params=(INSTANCE_ID, WORKER_ACTION), errors=(401, 403, 404, 409, 422, 503),
             extra={"error_text": {403: "no workers right (group `workers` or admin; recorded in the audit log)",
                                   404: "no such worker in the workers view", 409: "the worker has terminated",
                                   503: "no backend in this process to send the order through"}}),
    Endpoint("GET", "/api/stats", m.stats, "Workflows by status; outcomes and durations per job type", "stats",
             (200, s.Stats), query=s.StatsQuery, errors=(401, 422)),
    Endpoint("GET", "/api/stats/timeline", stats_timeline,
             "Workflows and jobs per status, job-type durations (count, p50, p95), per minute, hour or day",
             "stats", (200, Timeline), query=TimelineQuery, errors=(401, 422)),
    Endpoint("GET", "/api/audit", m.audit_log, "The audit log: every stored event with who and why (admins)",
             "audit", (200, m.AuditPage), query=m.AuditQuery, errors=(401, 403, 422)),
    Endpoint("POST", "/api/sessions", sf.create_session,
             "Sign in as the original's worker SDK does: email = a token's user, password = the token",
             COMPAT, (200, sf.Session), body=sf.SessionRequest, errors=(400, 401, 413, 422), public=True,
             extra={"error_text": {401: "unknown user or token (logged)"}}),
    Endpoint("GET", "/api/step_flow", sf.step_flow_info, "The Step Flow API level spoken", COMPAT,
             (200, sf.StepFlowInfo), extra=RAW_TOKEN),
    Endpoint("GET", "/api/step_flow/blacklist", sf.blacklist, "Jobs workers must not run: none", COMPAT,
             (200, sf.Blacklist), extra=RAW_TOKEN),
    Endpoint("DELETE", "/api/step_flow/blacklist/{job_id}", sf.unblacklist_job,
             "Take a job off the blacklist: nothing to do, it is empty", COMPAT, (200, sf.Blacklist),
             path_params=(STEP_FLOW_JOB_ID,), errors=(401, 422), extra=RAW_TOKEN),
    Endpoint("GET", "/metrics", _metrics, "Prometheus metrics", "operations", (200, None),
             media_type="text/plain"),
    Endpoint("GET", "/healthz", healthz, "The process answers", "operations", (200, s.Health), errors=(),
             public=True),
    Endpoint("GET", "/readyz", readyz, "Store, broker and views are usable", "operations", (200, s.Health),
             errors=(503,), public=True),
    Endpoint("GET", "/openapi.json", _openapi, "This document", "operations", (200, None), errors=(),
             public=True),
)
