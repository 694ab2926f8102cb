"""The backend keeps the read side current: views follow its writes, workers come from discovery."""

from __future__ import annotations

from pathlib import Path

from amqp_fixtures import eventually

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


async def test_an_embedded_worker_is_shown_terminated_once_the_runtime_closed(tmp_path: Path) -> None:
    """The workers' last announcement (`Terminated`) is read by the backend before it stops,
    so `stepflow workers` shows them terminated after `serve --embedded` stops, not alive
    and, 90 s later, gone."""
    from stepflow.projections import open_view_store

    engine = WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                                 "SQLITE_DBNAME": str(tmp_path / "s.sqlite")})
    workers = []
    for n in range(2):
        worker = Worker("echoer", heartbeat_s=60, instance_id=f"echo-{n}")

        @worker.job("echo")
        async def echo(params: dict, ctx: JobContext) -> dict:
            return {}

        workers.append(worker)
    async with EmbeddedRuntime(engine, workers, projections=True) as runtime:
        side = runtime.read_side
        assert side is not None

        def listed() -> dict[str, str]:
            side._writer.submit(lambda: None).result(5)  # the announcements taken so far are written
            return {w.instance_id: w.status for w in queries.list_workers(side.runner.store)}

        await eventually(lambda: listed() == {"echo-0": "alive", "echo-1": "alive"}, what="the workers listed")
    store = open_view_store(engine)
    try:
        seen = {w.instance_id: w for w in queries.list_workers(store)}
    finally:
        store.close()
        engine.close()
    assert {i: w.status for i, w in seen.items()} == {"echo-0": "terminated", "echo-1": "terminated"}
    assert all(w.terminated_at is not None for w in seen.values())
