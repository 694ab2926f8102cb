"""Progress reports of the worker SDK reach the event log (embedded mode, in-process broker).

- A `ctx.progress()` sent right before the handler returns is recorded before the completion:
  the in-process broker hands a publisher's messages over in the order they were published,
  although progressions and completions sit on different queues.
- Progress message ids are unique per attempt and per run of a worker, so a job redelivered
  to a restarted worker reports progress the backend records, not drops as already applied.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from amqp_fixtures import eventually

from stepflow.adapters import protocol as p
from stepflow.adapters.backend import default_backend
from stepflow.adapters.embedded import EmbeddedRuntime
from stepflow.adapters.memory.broker import MemoryBroker
from stepflow.engine import events as ev
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.definitions import build_definition
from stepflow.sdk import JobContext, Worker


def memory_engine() -> WorkflowEngine:
    return WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def one_step(job_type: str) -> Any:
    return build_definition({"identifier": "t", "steps": [{"id": "only", "job_type": job_type}]})


def job_events(engine: WorkflowEngine, workflow_id: uuid.UUID) -> list[ev.Event]:
    return [e for e in engine.history(workflow_id) if isinstance(e, ev.JobProgressed | ev.JobCompleted)]


async def test_a_progress_sent_right_before_returning_is_recorded_before_the_completion() -> None:
    engine = memory_engine()
    worker = Worker("last-word", heartbeat_s=60, prefetch=4)

    @worker.job("last_word")
    async def last_word(params: dict, ctx: JobContext) -> dict:
        await ctx.progress(90, "almost")
        return {"done": True}

    async with EmbeddedRuntime(engine, [worker]) as runtime:
        workflow_ids = [await runtime.start(one_step("last_word")) for _ in range(5)]
        states = [await runtime.wait(workflow_id, timeout=10) for workflow_id in workflow_ids]
    assert [s.status for s in states] == ["completed"] * 5
    for workflow_id in workflow_ids:
        events = job_events(engine, workflow_id)
        assert [type(e).__name__ for e in events] == ["JobProgressed", "JobCompleted"], events
        progressed = events[0]
        assert isinstance(progressed, ev.JobProgressed)
        assert (progressed.progression, progressed.message) == (90, "almost")


async def test_a_restarted_worker_reports_progress_under_new_ids_and_it_is_recorded() -> None:
    """A worker goes away mid-job (its order goes back to the queue, redelivered); a new
    worker process runs the job again and reports progress 10 again: recorded, not dropped
    as a duplicate of the first run's report."""
    engine, broker = memory_engine(), MemoryBroker()
    backend = default_backend(engine, broker.backend(), outbox_poll_s=0.05, timeout_check_s=0.05)
    await backend.start()
    reported = asyncio.Event()
    release = asyncio.Event()

    def make_worker() -> Worker:
        worker = Worker("restarting", heartbeat_s=60, shutdown_grace_s=0.05)

        @worker.job("restartable")
        async def restartable(params: dict, ctx: JobContext) -> dict:
            await ctx.progress(10, "started")
            reported.set()
            await release.wait()
            await ctx.progress(60, "resumed")
            return {}

        return worker

    try:
        first, first_stop = make_worker(), asyncio.Event()
        first_task = asyncio.create_task(first.run(broker.worker(), stop=first_stop))
        # its queue first: an order for a job type no worker declared is unroutable
        await eventually(lambda: "restartable" in broker.bindings, what="the worker's queue declared")
        workflow_id = await backend.start_workflow(one_step("restartable"))
        await asyncio.wait_for(reported.wait(), 5)
        await eventually(lambda: _progressions(engine, workflow_id) == [10])
        first_stop.set()  # past its grace period the job is cancelled and its order requeued
        await asyncio.wait_for(first_task, 5)

        reported.clear()
        release.set()
        second, second_stop = make_worker(), asyncio.Event()
        second_task = asyncio.create_task(second.run(broker.worker(), stop=second_stop))
        await eventually(lambda: engine.workflow_state(workflow_id).status == "completed")
        second_stop.set()
        await asyncio.wait_for(second_task, 5)
    finally:
        await backend.stop()
    assert _progressions(engine, workflow_id) == [10, 10, 60]
    assert first.run_token != second.run_token
    progressed = [e for e in engine.history(workflow_id) if isinstance(e, ev.JobProgressed)]
    job_id = engine.workflow_state(workflow_id).jobs[progressed[0].job_id].wire_id  # as the worker knows it
    assert [e.cause for e in progressed] == [
        f"{job_id}:progression:1:{first.run_token}:1",
        f"{job_id}:progression:1:{second.run_token}:1",
        f"{job_id}:progression:1:{second.run_token}:2",
    ]
    assert sum(isinstance(e, ev.JobCompleted) for e in engine.history(workflow_id)) == 1


async def test_progress_message_ids_name_the_attempt() -> None:
    broker = MemoryBroker()
    worker = Worker("ids", heartbeat_s=60)
    done = asyncio.Event()

    @worker.job("ids")
    async def ids(params: dict, ctx: JobContext) -> dict:
        await ctx.progress(1)
        await ctx.progress(2)
        done.set()
        return {}

    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(broker.worker(), stop=stop))
    order = p.JobOrder(job_id="job-7", parameters=[], attempt=3, workflow_id=str(uuid.uuid4()))
    await eventually(lambda: "ids" in broker.bindings)
    await broker.route_order(p.Message(routing_key="ids", body=p.encoder.encode(order), message_id="job-7",
                                       headers={"workflow_id": order.workflow_id, "job_type": "ids"}))
    await asyncio.wait_for(done.wait(), 5)
    await eventually(lambda: worker.completed == 1)
    stop.set()
    await asyncio.wait_for(task, 5)
    queue = broker.queue(p.JOB_PROGRESSION)
    sent = [d.message_id for d in iter(queue.pop, None)]
    assert sent == [f"job-7:progression:3:{worker.run_token}:1", f"job-7:progression:3:{worker.run_token}:2"]


def _progressions(engine: WorkflowEngine, workflow_id: uuid.UUID) -> list[int]:
    return [e.progression for e in engine.history(workflow_id) if isinstance(e, ev.JobProgressed)]

