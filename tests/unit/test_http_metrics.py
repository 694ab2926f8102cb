"""`/metrics` per definition and per job type, queue depth, and lags that read 0 when idle;
written by prometheus_client, read back with its own parser."""

from __future__ import annotations

from pathlib import Path

import httpx
import structlog
from amqp_fixtures import eventually
from prometheus_client.parser import text_string_to_metric_families

from stepflow.adapters.embedded import EmbeddedRuntime
from stepflow.adapters.http.app import create_app
from stepflow.adapters.http.catalog import DefinitionCatalog
from stepflow.adapters.workers_loading import load_workers
from stepflow.engine.application import WorkflowEngine
from stepflow.projections import ProjectionRunner

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def parsed(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, through the official parser (the format is valid)."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


async def test_per_definition_metrics_queue_depth_and_idle_lags(memory_engine: WorkflowEngine) -> None:
    structlog.reset_defaults()
    runner = ProjectionRunner(memory_engine, poll_interval=0.05)
    runner.start()
    workers = load_workers([], EXAMPLES / "media" / "workflow.toml")
    catalog = DefinitionCatalog.from_paths([EXAMPLES / "media" / "workflow.toml", EXAMPLES / "retry"])
    async with EmbeddedRuntime(memory_engine, workers, after_store=runner.wake) as runtime:
        app = create_app(memory_engine, runner=runner, backend=runtime.backend, catalog=catalog)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            ids = []
            for _ in range(2):
                started = await http.post("/api/workflows", json={
                    "definition": "media-pipeline", "parameters": {"size_kib": 8, "renditions": ["360p"]}})
                ids.append(started.json()["workflow_id"])
            unroutable = await http.post("/api/workflows", json={"definition": "flaky-retry"})  # no retry worker here
            ids.append(unroutable.json()["workflow_id"])
            for wid in ids:
                async def ended(wid: str = wid) -> bool:
                    view = (await http.get(f"/api/workflows/{wid}")).json()
                    return view["workflow"]["status"] in ("completed", "error")

                await eventually(ended, what=f"workflow {wid} to end")
            # idle: the outbox and the hooks have nothing left, the broker holds nothing, and
            # every view has applied the whole log
            await runtime.backend.flush_outbox()
            await runtime.backend.hooks.flush()
            broker = runtime.broker
            await eventually(lambda: not broker._unacked and not any(len(q) for q in broker.queues.values()),
                             what="the in-process broker to be drained")
            await eventually(lambda: min(runner.positions().values()) >= memory_engine.max_notification_id(),
                             what="the views to catch up", context=lambda: str(runner.positions()))
            response = await http.get("/metrics")
    runner.close()
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    m = parsed(response.text)

    def v(name: str, **labels: str) -> float:
        return m[(name, tuple(sorted(labels.items())))]

    media = {"definition": "media-pipeline", "version": "1.0.0"}
    retry = {"definition": "flaky-retry", "version": "1.0.0"}
    assert v("stepflow_workflows_started_total", **media) == 2
    assert v("stepflow_workflows_completed_total", **media) == 2
    assert v("stepflow_workflows_failed_total", **media) == 0
    assert v("stepflow_workflows_started_total", **retry) == 1
    assert v("stepflow_workflows_failed_total", **retry) == 1
    assert v("stepflow_step_duration_seconds_count", **media, step="probe") == 2
    assert v("stepflow_step_duration_seconds_bucket", **media, step="probe", le="+Inf") == 2
    assert v("stepflow_step_duration_seconds_sum", **media, step="probe") > 0
    assert v("stepflow_definition_job_duration_seconds_count", **media, job_type="media_transcode") == 2
    assert v("stepflow_jobs_completed_total", job_type="media_transcode") == 2  # the old names stay
    assert v("stepflow_jobs_unroutable_total", job_type="retry_prepare") == 1
    # the in-process broker's queues: all drained
    assert v("stepflow_queue_messages", queue="media_probe") == 0
    assert v("stepflow_queue_messages", queue="job_completed") == 0
    # idle: no order left to publish, no ended workflow left for the hooks, though the log
    # went on after the last order (completions, WorkflowCompleted...)
    assert v("stepflow_outbox_lag_events") == 0
    assert v("stepflow_hooks_lag_events") == 0
    assert v("stepflow_projection_lag_events", view="definition_stats") == 0

def test_outbox_lag_counts_pending_orders_only(memory_engine: WorkflowEngine) -> None:
    from stepflow.adapters.http.metrics import pending
    from stepflow.adapters.outbox import TOPICS
    from stepflow.engine.definitions import load_definition

    definition = load_definition(EXAMPLES / "media" / "workflow.toml")
    memory_engine.start_workflow(definition, {})
    assert pending(memory_engine, 0, TOPICS) == 1  # one JobSubmitted, after the WorkflowStarted
    assert pending(memory_engine, memory_engine.max_notification_id(), TOPICS) == 0


