"""The workers view from announcements and from the orders in the log: paused, resumed,
terminated, and the jobs a worker runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from stepflow.engine.application import WorkflowEngine
from stepflow.projections import ProjectionRunner, WorkersView, queries


def test_paused_until_resumed_and_terminated_wins(memory_engine: WorkflowEngine) -> None:
    runner = ProjectionRunner(memory_engine)
    workers = WorkersView(runner.store)
    now = datetime.now(UTC)
    workers.record_heartbeat("w-1", "encode", at=now)
    workers.record_heartbeat("w-2", "encode", at=now)
    order = memory_engine.record_worker_order
    order(actor="ann", instance_id="w-1", order="stop_consuming_jobs", via="cli")
    order(actor="ann", instance_id="w-2", order="stop_consuming_jobs", via="cli")
    order(actor="bob", instance_id="w-2", order="resume_consuming_jobs", via="http")
    order(actor="bob", instance_id="w-2", order="status", via="http")
    runner.run_once()
    listed = {w.instance_id: w for w in queries.list_workers(runner.store)}
    assert listed["w-1"].status == "paused" and listed["w-1"].ordered_by == "ann"
    assert (listed["w-2"].status, listed["w-2"].last_order, listed["w-2"].ordered_by) == ("alive", "status", "bob")
    assert [w.instance_id for w in queries.list_workers(runner.store, include_gone=False)] == ["w-1", "w-2"]
    workers.record_status("w-2", "Suspended", at=now)  # an SDK that says so itself
    workers.record_terminated("w-1", at=now)
    listed = {w.instance_id: w for w in queries.list_workers(runner.store)}
    assert listed["w-1"].status == "terminated" and listed["w-2"].status == "paused"
    later = now + timedelta(seconds=600)
    assert {w.status for w in queries.list_workers(runner.store, now=later)} == {"terminated", "gone"}
    runner.rebuild(["worker_orders"])  # from the log: the same
    assert {w.instance_id: w.status for w in queries.list_workers(runner.store)} == {"w-1": "terminated",
                                                                                     "w-2": "paused"}
    runner.close()
