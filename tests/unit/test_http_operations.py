"""Metrics, health and the OpenAPI document; the API in front of a running embedded backend."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from uuid import UUID

import httpx
import msgspec
import pytest
import structlog
from amqp_fixtures import eventually, wait_until
from starlette.testclient import TestClient

from stepflow.adapters.amqp import AmqpBackendBroker
from stepflow.adapters.embedded import EmbeddedRuntime
from stepflow.adapters.http.app import create_app
from stepflow.adapters.http.catalog import DefinitionCatalog, version_key
from stepflow.adapters.http.metrics import fold
from stepflow.adapters.http.routes import ENDPOINTS
from stepflow.adapters.start_batch import StartBatcher
from stepflow.adapters.workers_loading import load_workers
from stepflow.engine.application import Start, WorkflowEngine
from stepflow.engine.definitions import DefinitionError
from stepflow.projections import ProjectionRunner

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SAMPLE = re.compile(r'^stepflow_([a-z_]+)(\{[^}]*\})? (\S+)$')


@pytest.fixture(autouse=True)
def plain_logging() -> None:
    structlog.reset_defaults()


@pytest.fixture
def client(memory_engine: WorkflowEngine) -> Iterator[TestClient]:
    catalog = DefinitionCatalog.from_paths([EXAMPLES / "media" / "workflow.toml", EXAMPLES / "retry"])
    with TestClient(create_app(memory_engine, catalog=catalog)) as c:
        yield c


def samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) stepflow_[a-z_]+ ", line), line
            continue
        match = SAMPLE.match(line)
        assert match, line
        out[f"{match.group(1)}{match.group(2) or ''}"] = float(match.group(3))
    return out


def test_metrics_from_the_views(client: TestClient) -> None:
    client.post("/api/workflows", json={"definition": "media-pipeline"})

    def caught_up() -> dict[str, float] | None:
        """The views follow the log in the background: scrape until they have the start."""
        response = client.get("/metrics")
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        values = samples(response.text)
        lags = [v for k, v in values.items() if k.startswith("projection_lag_events")]
        return values if lags and not any(lags) else None

    values = wait_until(caught_up, what="every view to apply the start")
    assert values['workflows{status="running"}'] == 1
    assert values['jobs_submitted_total{job_type="media_probe"}'] == 1
    assert values['job_duration_seconds_count{job_type="media_probe"}'] == 0
    assert values['job_duration_seconds_bucket{job_type="media_probe",le="+Inf"}'] == 0
    assert values["log_position"] >= 2
    assert values['projection_lag_events{view="workflows"}'] == 0


def test_histogram_folding_is_cumulative_and_never_undercounts() -> None:
    from stepflow.projections.job_stats import bucket_of

    histogram: dict[int, int] = {}
    for seconds in (0.004, 0.2, 0.2, 3.0, 5000.0):
        histogram[bucket_of(seconds)] = histogram.get(bucket_of(seconds), 0) + 1
    bounds = (0.01, 0.25, 5.0, 60.0)
    assert fold(histogram, bounds) == [1, 3, 4, 4]


def test_healthz_and_readyz(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"store": "ok", "projections": "ok"}
    services = client.app.state.services  # type: ignore[attr-defined]
    monkeypatch.setattr(services.engine, "max_notification_id", lambda: 1 / 0)
    broken = client.get("/readyz")
    assert broken.status_code == 503 and broken.json()["checks"]["store"] == "unreachable: ZeroDivisionError"


def test_readyz_waits_for_views_within_the_bound(memory_engine: WorkflowEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = ProjectionRunner(memory_engine)  # never started: the views stay behind
    catalog = DefinitionCatalog.from_paths([EXAMPLES / "media" / "workflow.toml"])
    monkeypatch.setenv("STEPFLOW_READY_MAX_LAG", "1")  # read with the other settings as the app is made
    app = create_app(memory_engine, runner=runner, catalog=catalog)
    with TestClient(app) as c:
        app.state.services.store.wait = lambda *a, **k: True  # do not wait for the views after the start
        c.post("/api/workflows", json={"definition": "media-pipeline"})
        behind = c.get("/readyz")
        assert behind.status_code == 503 and behind.json()["checks"]["projections"] == "3 events behind (bound 1)"
        app.state.settings = msgspec.structs.replace(app.state.settings, ready_max_lag=5)
        assert c.get("/readyz").status_code == 200
    runner.close()


async def _no_store(starts: Sequence[Start]) -> list[UUID | Exception]:
    raise AssertionError("nothing starts here")


def test_readyz_reports_a_lost_broker(memory_engine: WorkflowEngine) -> None:
    broker = AmqpBackendBroker("amqp://guest:guest@127.0.0.1:1/")  # its `connected`, as the port says
    backend = SimpleNamespace(broker=broker, check=lambda: None, starts=StartBatcher(_no_store))
    with TestClient(create_app(memory_engine, backend=backend)) as c:
        assert c.get("/readyz").json()["checks"]["broker"] == "disconnected"  # never connected
        connection = SimpleNamespace(is_closed=True)  # an aio-pika robust connection, reconnecting
        broker._connection = connection  # type: ignore[assignment]
        assert c.get("/readyz").json()["checks"]["broker"] == "disconnected"
        connection.is_closed = False
        assert c.get("/readyz").json()["checks"]["broker"] == "ok"


def test_openapi_documents_every_route(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    for e in ENDPOINTS:
        operation = doc["paths"][e.path][e.method.lower()]
        assert str(e.ok[0]) in operation["responses"]
        if not e.public:
            assert "401" in operation["responses"]
    start = doc["paths"]["/api/workflows"]["post"]
    assert start["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/StartRequest"}
    assert {"ErrorBody", "WorkflowView", "WorkflowSummary", "JobInfo"} <= set(doc["components"]["schemas"])
    listing = {p["name"]: p for p in doc["paths"]["/api/workflows"]["get"]["parameters"]}
    assert listing["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}


def test_catalog_versions_and_bad_files(tmp_path: Path) -> None:
    assert sorted(["1.10.0", "1.2.0", "1.2.0-rc1", "0.9.9"], key=version_key) == ["0.9.9", "1.2.0-rc1", "1.2.0", "1.10.0"]
    (tmp_path / "bad.toml").write_text('identifier = "x"\nsteps = [{ id = "a" }]\n')
    with pytest.raises(DefinitionError, match="bad.toml: Object missing required field `job_type`"):
        DefinitionCatalog.from_paths([tmp_path])
    with pytest.raises(DefinitionError, match="missing.toml"):
        DefinitionCatalog.from_paths([tmp_path / "missing.toml"])


async def test_the_api_in_front_of_an_embedded_backend(memory_engine: WorkflowEngine) -> None:
    runner = ProjectionRunner(memory_engine, poll_interval=0.05)
    runner.start()
    workers = load_workers([], EXAMPLES / "media" / "workflow.toml")
    catalog = DefinitionCatalog.from_paths([EXAMPLES / "media" / "workflow.toml"])
    async with EmbeddedRuntime(memory_engine, workers, after_store=runner.wake) as runtime:
        app = create_app(memory_engine, runner=runner, backend=runtime.backend, catalog=catalog)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            started = await http.post("/api/workflows", json={"definition": "media-pipeline",
                                                                "parameters": {"size_kib": 8, "renditions": ["360p"]}})
            assert started.status_code == 201
            wid = started.json()["workflow_id"]

            async def ended() -> dict[str, Any] | None:
                view = (await http.get(f"/api/workflows/{wid}")).json()
                return view if view["workflow"]["status"] in ("completed", "error", "stopped") else None

            view = await eventually(ended, what="the workflow's end in the views")
            assert view["workflow"]["status"] == "completed"
            assert {j["status"] for j in view["jobs"]} == {"completed"} and len(view["jobs"]) == 3
            await runtime.backend.flush_outbox()  # idle: every order confirmed, the position past it
            values = samples((await http.get("/metrics")).text)
            assert (await http.get("/readyz")).json()["checks"]["broker"] == "ok"
    runner.close()
    assert values["orders_published_total"] == 3
    assert values['inbound_batch_size_bucket{le="+Inf"}'] >= 1
    assert values['jobs_completed_total{job_type="media_transcode"}'] == 1
    assert values["outbox_lag_events"] == 0  # nothing left to publish, though the log went on
    assert values['notification_calls_total{outcome="ok"}'] == 0
