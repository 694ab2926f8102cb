"""The backend keeps the read side current: views follow its writes, workers come from discovery."""

from __future__ import annotations

from pathlib import Path

from stepflow.adapters.embedded import EmbeddedRuntime
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.definitions import build_definition
from stepflow.projections import queries
from stepflow.sdk import JobContext, Worker


async def test_embedded_backend_feeds_the_views_and_the_workers_view(tmp_path: Path) -> None:
    engine = WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                                 "SQLITE_DBNAME": str(tmp_path / "s.sqlite")})
    worker = Worker("echoer", version="2.3.4", heartbeat_s=0.05, instance_id="echo-1")

    @worker.job("echo")
    async def echo(params: dict, ctx: JobContext) -> dict:
        return {"ok": True}

    definition = build_definition({"identifier": "t", "steps": [{"id": "a", "job_type": "echo"}]})
    async with EmbeddedRuntime(engine, [worker], projections=True) as runtime:
        workflow_id = await runtime.start(definition, labels=["nightly"])
        await runtime.wait(workflow_id, timeout=10)
        store = runtime.read_side.runner.store  # type: ignore[union-attr]
        detail = queries.get_workflow(store, workflow_id, wait_for=engine.max_notification_id(), timeout=5)
        runtime.read_side._writer.submit(lambda: None).result(5)  # type: ignore[union-attr]
        workers = queries.list_workers(store)
    assert detail is not None and detail.workflow.status == "completed"
    assert "nightly" in detail.workflow.labels
    (seen,) = [w for w in workers if w.instance_id == "echo-1"]
    assert seen.version == "2.3.4" and seen.job_type == "echo" and seen.status == "alive"
