"""Worker controls over HTTP (`POST /api/workers/{id}/{action}`) in front of an embedded
backend: rights and their audit, pause (the worker takes no order, and lists as paused, with
the job it runs), resume, status, stop (the worker terminates and lists as terminated)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import httpx
import pytest
import structlog
from amqp_fixtures import eventually
from starlette.testclient import TestClient

from stepflow.adapters import protocol as p
from stepflow.adapters.embedded import EmbeddedRuntime
from stepflow.adapters.http.app import create_app
from stepflow.adapters.http.auth import TokenAuth, parse_tokens
from stepflow.adapters.http.catalog import DefinitionCatalog
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.definitions import build_definition
from stepflow.projections.history import audit
from stepflow.sdk import JobContext, Worker

OPS, VIEWER, ADMIN = "ops-token-0123456789", "viewer-token-0123456789", "admin-token-0123456789"
TOKENS = f"{OPS}=olga:ops,workers; {VIEWER}=vic:viewers; {ADMIN}=ada:admin"
HOLD = {"identifier": "hold", "steps": [{"id": "wait", "job_type": "held", "fan_out": "{workflow.items}"}],
        "parameters": [{"id": "items", "type": "array_of_strings", "default": ["a"]}]}


def as_(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(autouse=True)
def plain_logging() -> None:
    structlog.reset_defaults()


class Gate:
    """A worker whose jobs report progress, then wait until the test opens the gate."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.started: list[str] = []
        self.worker = Worker("holder", instance_id="holder-1", heartbeat_s=0.2)

        @self.worker.job("held")
        async def held(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
            self.started.append(ctx.job_id)
            await ctx.progress(10, "waiting at the gate")
            await self.open.wait()
            return {}


@pytest.fixture
async def served(memory_engine: WorkflowEngine) -> AsyncIterator[tuple[httpx.AsyncClient, Gate, Any]]:
    gate = Gate()
    catalog = DefinitionCatalog([build_definition(HOLD)])
    async with EmbeddedRuntime(memory_engine, [gate.worker], projections=True) as runtime:
        assert runtime.read_side is not None
        runtime.read_side.runner.poll_interval = 0.05
        app = create_app(memory_engine, runner=runtime.read_side.runner, backend=runtime.backend,
                         catalog=catalog, auth=TokenAuth(parse_tokens(TOKENS)))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            yield http, gate, runtime
        gate.open.set()


async def worker_row(http: httpx.AsyncClient) -> dict[str, Any]:
    listing = (await http.get("/api/workers", headers=as_(OPS))).json()
    rows = [w for w in listing["items"] if w["instance_id"] == "holder-1"]
    return rows[0] if rows else {}


async def test_pause_resume_status_stop(served: tuple[httpx.AsyncClient, Gate, Any],
                                        memory_engine: WorkflowEngine) -> None:
    http, gate, _ = served
    await eventually(lambda: worker_row(http))
    listing = (await http.get("/api/workers", headers=as_(OPS))).json()
    assert listing["can"] == ["status", "pause", "resume", "stop"]
    assert (await http.get("/api/workers", headers=as_(VIEWER))).json()["can"] == []

    paused = await http.post("/api/workers/holder-1/pause", headers=as_(OPS))
    assert paused.status_code == 202, paused.text
    assert paused.json()["order"] == "stop_consuming_jobs"
    row = await worker_row(http)
    assert row["status"] == "paused" and row["last_order"] == "stop_consuming_jobs" and row["ordered_by"] == "olga"

    assert (await http.post("/api/workers/holder-1/resume", headers=as_(OPS))).status_code == 202
    assert (await worker_row(http))["status"] == "alive"
    started = await http.post("/api/workflows", json={"definition": "hold"}, headers=as_(OPS))
    wid = started.json()["workflow_id"]
    row = await eventually(lambda: _running(http))
    jobs = (await http.get(f"/api/workflows/{wid}", headers=as_(OPS))).json()["jobs"]
    assert row["status"] == "alive" and row["running_jobs"] == [jobs[0]["job_id"]]

    assert (await http.post("/api/workers/holder-1/status", headers=as_(ADMIN))).status_code == 202
    assert (await http.post("/api/workers/holder-1/stop", headers=as_(OPS))).status_code == 202
    gate.open.set()  # the running job finishes, then the worker exits
    row = await eventually(lambda: _terminated(http))
    assert row["terminated_at"] is not None
    assert (await http.post("/api/workers/holder-1/pause", headers=as_(OPS))).status_code == 409

    orders = [(e.actor, e.data["instance_id"], e.data["order"]) for e in audit(memory_engine)
              if e.event == "WorkerOrdered"]
    assert orders == [("olga", "holder-1", "stop_consuming_jobs"), ("olga", "holder-1", "resume_consuming_jobs"),
                      ("ada", "holder-1", "status"), ("olga", "holder-1", "stop_worker")]


async def test_a_paused_embedded_worker_takes_no_order_until_resumed(
        served: tuple[httpx.AsyncClient, Gate, Any]) -> None:
    """The in-process broker used to hand over one more order when the pause came while the
    worker was already waiting for one (over RabbitMQ the consumer is cancelled:
    tests/e2e/test_worker_control.py)."""
    http, gate, runtime = served
    broker = runtime.broker
    direct = f"{p.DIRECT_MESSAGING}_holder-1"
    await eventually(lambda: worker_row(http))
    assert (await http.post("/api/workers/holder-1/pause", headers=as_(OPS))).status_code == 202
    # The worker took the pause order and acked it, which it does right before it pauses.
    await eventually(lambda: not len(broker.queue(direct))
                     and all(d.queue != direct for d, _ in broker._unacked.values()),
                     what="the worker to take the pause order")
    started = await http.post("/api/workflows", json={"definition": "hold"}, headers=as_(OPS))
    wid = started.json()["workflow_id"]
    await eventually(lambda: len(broker.queue("held")) == 1, what="the order on the job-type queue")
    await asyncio.sleep(0.3)  # no condition to wait for: a window in which the order must stay put
    assert gate.started == [] and len(broker.queue("held")) == 1

    assert (await http.post("/api/workers/holder-1/resume", headers=as_(OPS))).status_code == 202
    await eventually(lambda: gate.started, what="the resumed worker to take the order")
    jobs = (await http.get(f"/api/workflows/{wid}", headers=as_(OPS))).json()["jobs"]
    job = runtime.engine.workflow_state(UUID(wid)).jobs[jobs[0]["job_id"]]
    assert gate.started == [str(job.wire_id)]  # a worker knows the job by its wire id


async def _running(http: httpx.AsyncClient) -> dict[str, Any] | None:
    row = await worker_row(http)
    return row if row.get("running_jobs") else None


async def _terminated(http: httpx.AsyncClient) -> dict[str, Any] | None:
    row = await worker_row(http)
    return row if row.get("status") == "terminated" else None


async def test_refusals_and_bad_requests(served: tuple[httpx.AsyncClient, Gate, Any],
                                         memory_engine: WorkflowEngine) -> None:
    http, _, _ = served
    await eventually(lambda: worker_row(http))
    refused = await http.post("/api/workers/holder-1/stop", headers=as_(VIEWER))
    assert refused.status_code == 403 and "workers right" in refused.json()["message"]
    entry = (await http.get("/api/audit", params={"event": "ActionRefused"}, headers=as_(ADMIN))).json()["items"]
    assert [(e["actor"], e["data"]["action"]) for e in entry] == [("vic", "stop workers")]
    assert (await http.post("/api/workers/holder-1/stop")).status_code == 401
    bad = await http.post("/api/workers/holder-1/explode", headers=as_(OPS))
    assert bad.status_code == 422 and bad.json()["field"] == "path.action"
    assert "status, pause, resume, stop" in bad.json()["message"]
    unknown = await http.post("/api/workers/nobody/pause", headers=as_(OPS))
    assert unknown.status_code == 404 and unknown.json()["field"] == "path.instance_id"
    assert not [e for e in audit(memory_engine) if e.event == "WorkerOrdered"]


def test_no_backend_no_orders(memory_engine: WorkflowEngine) -> None:
    from stepflow.projections import WorkersView
    from stepflow.projections.workers import utcnow

    app = create_app(memory_engine)
    with TestClient(app) as client:
        WorkersView(app.state.services.store).record_heartbeat("w-1", "held", at=utcnow())
        assert client.get("/api/workers").json()["can"] == []
        answer = client.post("/api/workers/w-1/pause")
        assert answer.status_code == 503 and "stepflow serve --http" in answer.json()["message"]
