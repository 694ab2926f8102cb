"""The backend and worker SDK over the in-process broker: embedded mode from the outside."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from amqp_fixtures import eventually

from stepflow.adapters import protocol as p
from stepflow.adapters.backend import Backend, default_backend
from stepflow.adapters.embedded import EmbeddedRuntime
from stepflow.adapters.memory.broker import MemoryBroker, MemoryDelivery
from stepflow.adapters.workers_loading import load_workers
from stepflow.engine import commands as cmd
from stepflow.engine import events as ev
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.definitions import build_definition, load_definition
from stepflow.sdk import JobContext, Worker

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def memory_engine() -> WorkflowEngine:
    return WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def one_step(job_type: str = "echo", **step: Any) -> Any:
    return build_definition({"identifier": "t", "steps": [{"id": "only", "job_type": job_type, **step}]})


def echo_worker(**kw: Any) -> Worker:
    worker = Worker("echo", heartbeat_s=0.05, **kw)

    @worker.job("echo")
    async def echo(params: dict, ctx: JobContext) -> dict:
        await ctx.progress(50, "half")
        return {"echo": params.get("x", 1)}

    return worker


def kinds(engine: WorkflowEngine, workflow_id: uuid.UUID) -> Counter[str]:
    return Counter(type(e).__name__ for e in engine.history(workflow_id))


async def test_media_example_completes_with_every_job_once() -> None:
    engine = memory_engine()
    definition = load_definition(EXAMPLES / "media" / "workflow.toml")
    workers = load_workers([], EXAMPLES / "media" / "workflow.toml")
    async with EmbeddedRuntime(engine, workers) as runtime:
        workflow_id = await runtime.start(definition, {"renditions": ["360p", "720p"], "size_kib": 16})
        state = await runtime.wait(workflow_id, timeout=20)
    assert state.status == "completed"
    assert [s.status for s in sorted(state.steps.values(), key=lambda s: s.order)] == ["completed"] * 3
    counts = kinds(engine, workflow_id)
    assert counts["JobSubmitted"] == counts["JobCompleted"] == 4
    package = state.steps["package"].outputs
    assert package["entries"] == 2


async def test_retry_example_fails_then_succeeds() -> None:
    engine = memory_engine()
    path = EXAMPLES / "retry" / "workflow.toml"
    async with EmbeddedRuntime(engine, load_workers([], path)) as runtime:
        workflow_id = await runtime.start(load_definition(path), {"fail_times": 2})
        state = await runtime.wait(workflow_id, timeout=20)
    assert state.status == "completed"
    counts = kinds(engine, workflow_id)
    assert counts["JobErrored"] == 2 and counts["JobRetryScheduled"] == 2
    assert state.steps["flaky"].outputs["succeeded_on_attempt"] == 3


async def test_retries_exhausted_fail_the_workflow_with_the_reason() -> None:
    engine = memory_engine()
    path = EXAMPLES / "retry" / "workflow.toml"
    async with EmbeddedRuntime(engine, load_workers([], path)) as runtime:
        workflow_id = await runtime.start(load_definition(path), {"fail_times": 9})
        state = await runtime.wait(workflow_id, timeout=20)
    assert state.status == "error"
    assert "transient failure on attempt 4" in (state.reason or "")
    assert kinds(engine, workflow_id)["JobSubmitted"] == 1 + 4


async def _backend_with(engine: WorkflowEngine, broker: MemoryBroker) -> Backend:
    backend = default_backend(engine, broker.backend(), outbox_poll_s=0.05, timeout_check_s=0.05)
    await backend.start()
    return backend


def _response(job_id: str, workflow_id: uuid.UUID, message_id: str, status: str = "completed") -> p.Message:
    body = p.JobResult(job_id=job_id, status=status, parameters=[p.Parameter(id="out", value=7)])  # type: ignore[arg-type]
    return p.Message(routing_key=f"job_{status}", body=p.encoder.encode(body), message_id=message_id,
                     headers={"workflow_id": str(workflow_id)})


async def _settle(broker: MemoryBroker) -> None:
    """Until the backend has settled every response (applied or quarantined, and acked)."""
    await eventually(lambda: not any(len(broker.queue(q)) for q in p.RESPONSE_KEYS) and not broker._unacked,
                     what="every response settled")


async def test_a_response_delivered_twice_changes_state_once() -> None:
    engine, broker = memory_engine(), MemoryBroker()
    backend = await _backend_with(engine, broker)
    try:
        workflow_id = await backend.start_workflow(one_step())
        job_id = next(iter(engine.workflow_state(workflow_id).jobs))
        for _ in range(2):
            await broker.publish(p.JOB_COMPLETED, _response(job_id, workflow_id, "m-1"))
        await _settle(broker)
    finally:
        await backend.stop()
    assert kinds(engine, workflow_id)["JobCompleted"] == 1
    assert engine.workflow_state(workflow_id).status == "completed"
    assert broker.quarantined == []


@pytest.mark.parametrize(
    ("body", "headers", "content_type", "reason"),
    [
        (b"{not json", {"workflow_id": "w"}, p.CONTENT_TYPE, "invalid job_completed message"),
        (b'{"job_id": 5, "status": "completed"}', {}, p.CONTENT_TYPE, "no job has the wire id 5"),
        (b'{"job_id": -1, "status": "completed"}', {}, p.CONTENT_TYPE, "invalid job_id -1: not an unsigned 64-bit integer"),
        (b'{"job_id": true, "status": "completed"}', {}, p.CONTENT_TYPE, "Expected `int | str`, got `bool`"),
        # what the original SDK answers to an order it cannot read
        (b'{"message": "missing field `type` at line 1 column 118", "status": "error"}', {}, p.CONTENT_TYPE,
         "without job_id (a worker could not read an order or a direct message): missing field `type`"),
        (b'{"job_id": "j", "status": "completed"}', {}, p.CONTENT_TYPE, "no workflow_id"),
        (b'{"job_id": "j", "status": "completed"}', {"workflow_id": "nope"}, p.CONTENT_TYPE, "not a UUID"),
        (b'{"job_id": "j", "status": "completed"}', {"workflow_id": str(uuid.uuid4())}, p.CONTENT_TYPE,
         "unknown workflow"),
        (b'{"job_id": "j", "status": "completed"}', {}, "text/plain", "content type 'text/plain'"),
        (b'{"job_id": "j", "status": "error"}', {}, p.CONTENT_TYPE, "status 'error' on the job_completed queue"),
        (b"x" * (p.MAX_BODY_BYTES + 1), {}, p.CONTENT_TYPE, "over the"),
    ],
)
async def test_malformed_responses_are_quarantined_with_reason_and_an_event(
    body: bytes, headers: dict[str, str], content_type: str, reason: str
) -> None:
    engine, broker = memory_engine(), MemoryBroker()
    backend = await _backend_with(engine, broker)
    try:
        broker.queue(p.JOB_COMPLETED).put(MemoryDelivery(queue=p.JOB_COMPLETED, body=body, message_id="bad-1",
                                                         headers=headers, content_type=content_type))
        await broker._notify()
        await _settle(broker)
        # the backend keeps running: a real workflow still completes afterwards (on this
        # backend: a second one on the same engine would publish its orders too)
        assert backend.running
        workflow_id = await backend.start_workflow(one_step())
        job_id = next(iter(engine.workflow_state(workflow_id).jobs))
        await broker.publish(p.JOB_COMPLETED, _response(job_id, workflow_id, "good-1"))
        await _settle(broker)
        assert engine.workflow_state(workflow_id).status == "completed"
    finally:
        await backend.stop()
    assert len(broker.quarantined) == 1
    delivery, why = broker.quarantined[0]
    assert reason in why and delivery.body == body
    recorded = [e for _, e in engine.notifications(0, 100) if isinstance(e, ev.MessageQuarantined)]
    assert len(recorded) == 1 and reason in recorded[0].reason


async def test_completion_for_an_already_completed_job_is_kept_as_a_late_answer() -> None:
    engine, broker = memory_engine(), MemoryBroker()
    backend = await _backend_with(engine, broker)
    try:
        workflow_id = await backend.start_workflow(one_step())
        job_id = next(iter(engine.workflow_state(workflow_id).jobs))
        await broker.publish(p.JOB_COMPLETED, _response(job_id, workflow_id, "first"))
        await _settle(broker)
        await broker.publish(p.JOB_COMPLETED, _response(job_id, workflow_id, "second"))
        await _settle(broker)
    finally:
        await backend.stop()
    assert kinds(engine, workflow_id)["JobCompleted"] == 1
    assert broker.quarantined == []  # a late answer is no garbage
    late = {e.cause: e for e in engine.history(workflow_id) if isinstance(e, ev.LateAnswerReceived)}
    second = late["second"]  # (the order, with no worker here, also came back unroutable: late too)
    assert (second.job_id, second.answer, second.job_status, second.outputs) == (job_id, "completed", "completed", {"out": 7})
    assert backend.stats["late_answers"] == len(late)


async def test_unknown_job_type_ends_unroutable_and_fails_the_workflow() -> None:
    engine = memory_engine()
    async with EmbeddedRuntime(engine, [echo_worker()]) as runtime:
        workflow_id = await runtime.start(one_step("nobody_serves_this"))
        state = await runtime.wait(workflow_id, timeout=10)
    assert state.status == "error"
    (job,) = state.jobs.values()
    assert job.status == "unroutable" and "nobody_serves_this" in (job.error or "")
    assert kinds(engine, workflow_id)["JobUnroutable"] == 1


async def test_stop_order_reaches_the_worker_which_cancels_the_job() -> None:
    engine = memory_engine()
    started, cancelled = asyncio.Event(), asyncio.Event()
    worker = Worker("slow", heartbeat_s=60)

    @worker.job("slow")
    async def slow(params: dict, ctx: JobContext) -> dict:
        started.set()
        try:
            await asyncio.sleep(60)
        finally:
            cancelled.set()
        return {}

    async with EmbeddedRuntime(engine, [worker]) as runtime:
        workflow_id = await runtime.start(one_step("slow"))
        await asyncio.wait_for(started.wait(), 5)
        await runtime.backend.command(cmd.StopWorkflow(workflow_id=workflow_id, actor="tester", reason="enough"))
        await asyncio.wait_for(cancelled.wait(), 5)
        state = await runtime.wait(workflow_id, timeout=5)
        await eventually(lambda: len(runtime.broker.queue(p.JOB_STOPPED)) == 0 and worker.completed,
                         what="the worker's job_stopped answer, taken by the backend")
    assert state.status == "stopped"
    assert all(job.status == "stopped" for job in state.jobs.values())
    stopped = [e for e in engine.history(workflow_id) if isinstance(e, ev.WorkflowStopped)]
    assert stopped[0].actor == "tester" and stopped[0].jobs == tuple(state.jobs)
    assert worker.completed == 1  # it answered (job_stopped) and acked the order


async def test_a_stop_that_comes_before_its_order_is_kept_and_the_order_is_not_run() -> None:
    """A worker with one prefetch slot runs A (it hangs); B's order waits in the queue. B is
    stopped: the stop goes to every worker (no instance was heard on B yet), and this one does
    not hold B. Once A is stopped too, B's order arrives: it is answered `stopped` and never
    run, so it cannot hold the slot for a job the backend gave up on."""
    engine = memory_engine()
    runs: list[str] = []
    worker = Worker("slow", heartbeat_s=60, prefetch=1)

    @worker.job("slow")
    async def slow(params: dict, ctx: JobContext) -> dict:
        runs.append(ctx.workflow_id)
        await asyncio.sleep(60)
        return {}

    async with EmbeddedRuntime(engine, [worker]) as runtime:
        first = await runtime.start(one_step("slow"))
        await eventually(lambda: runs, what="the first job running")
        second = await runtime.start(one_step("slow"))
        await runtime.backend.command(cmd.StopWorkflow(workflow_id=second, actor="tester", reason="not needed"))
        await eventually(lambda: worker._stopped_ahead, what="the stop of a job not held here, kept")
        await runtime.backend.command(cmd.StopWorkflow(workflow_id=first, actor="tester", reason="enough"))
        await eventually(lambda: worker.completed == 2, what="both orders answered")
        for workflow_id in (first, second):
            assert (await runtime.wait(workflow_id, timeout=5)).status == "stopped"
    assert runs == [str(first)]  # the second job's handler never ran
    assert not worker._stopped_ahead


async def test_pause_holds_new_jobs_until_resume() -> None:
    engine = memory_engine()
    definition = build_definition({"identifier": "t", "steps": [
        {"id": "a", "job_type": "echo"}, {"id": "b", "job_type": "echo", "parents": ["a"]}]})
    gate = asyncio.Event()
    worker = Worker("gated", heartbeat_s=60)

    @worker.job("echo")
    async def echo(params: dict, ctx: JobContext) -> dict:
        await gate.wait()
        return {}

    async with EmbeddedRuntime(engine, [worker]) as runtime:
        workflow_id = await runtime.start(definition)
        await runtime.backend.command(cmd.PauseWorkflow(workflow_id=workflow_id))
        gate.set()

        async def a_completed() -> bool:
            state = await runtime.state(workflow_id)
            return bool(state.steps["a"].jobs) and state.current_jobs("a")[0].status == "completed"

        await eventually(a_completed, what="step a's job to complete")
        paused = await runtime.state(workflow_id)
        assert paused.status == "paused" and paused.steps["b"].status == "waiting"
        await runtime.backend.command(cmd.ResumeWorkflow(workflow_id=workflow_id))
        state = await runtime.wait(workflow_id, timeout=10)
    assert state.status == "completed"


async def test_a_silent_job_times_out_and_its_retry_succeeds() -> None:
    engine = memory_engine()
    worker = Worker("sometimes-silent", heartbeat_s=60, prefetch=2, shutdown_grace_s=0.1)

    @worker.job("echo")
    async def echo(params: dict, ctx: JobContext) -> dict:
        if ctx.attempt == 1:
            await asyncio.sleep(3600)  # a worker that never answers
        return {"attempt": ctx.attempt}

    definition = one_step(timeout_s=0.3, retry={"max_attempts": 2, "backoff_s": 0.05})
    async with EmbeddedRuntime(engine, [worker], timeout_check_s=0.05) as runtime:
        workflow_id = await runtime.start(definition)
        state = await runtime.wait(workflow_id, timeout=10)
    assert state.status == "completed"
    assert kinds(engine, workflow_id)["JobTimedOut"] == 1
    assert state.steps["only"].outputs == {"attempt": 2}


async def test_a_worker_dying_mid_job_leads_to_redelivery_and_one_completion() -> None:
    engine, broker = memory_engine(), MemoryBroker()
    backend = await _backend_with(engine, broker)
    try:
        dying = broker.worker()
        await dying.consume_orders(["echo"], 1)  # declares and binds the job-type queue
        workflow_id = await backend.start_workflow(one_step())
        await backend.flush_outbox()
        order = await asyncio.wait_for(dying.next_order(), 5)
        await dying.close()  # crash: the order was never acked
        requeued = broker.queue("echo").pop()
        assert requeued is not None and requeued.redelivered and requeued.message_id == order.message_id
        broker.queue("echo").put(requeued)
        stop = asyncio.Event()
        healthy = echo_worker()
        task = asyncio.create_task(healthy.run(broker.worker(), stop=stop))
        await eventually(lambda: engine.workflow_state(workflow_id).status == "completed",
                         what="the redelivered job's completion")
        stop.set()
        await task
    finally:
        await backend.stop()
    assert engine.workflow_state(workflow_id).status == "completed"
    assert kinds(engine, workflow_id)["JobCompleted"] == 1


async def test_outbox_publishes_orders_stored_before_a_crash_once(tmp_path: Path) -> None:
    store = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp_path / "s.sqlite")}
    # Stored, never published: the backend "crashed" after the store and before the outbox ran.
    WorkflowEngine(env=store).start_workflow(one_step())
    published = []
    for _restart in range(2):  # the first restart publishes, the second finds nothing left
        broker = MemoryBroker()
        broker.bindings["echo"] = "echo"
        backend = await _backend_with(WorkflowEngine(env=store), broker)
        await backend.flush_outbox()
        await backend.stop()
        published.append(len(broker.queue("echo")))
    assert published == [1, 0]


async def test_a_stopping_worker_puts_unfinished_orders_back_after_its_grace_period() -> None:
    broker = MemoryBroker()
    worker = Worker("slow", heartbeat_s=60, shutdown_grace_s=0.1)
    started = asyncio.Event()

    @worker.job("slow")
    async def slow(params: dict, ctx: JobContext) -> dict:
        started.set()
        await asyncio.sleep(3600)
        return {}

    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(broker.worker(), stop=stop))
    await eventually(lambda: "slow" in broker.bindings, what="the worker's job-type queue")
    order = p.JobOrder(job_id="j-1", parameters=[], workflow_id=str(uuid.uuid4()))
    await broker.route_order(p.Message(routing_key="slow", body=p.encoder.encode(order), message_id="j-1",
                                       headers={"job_type": "slow"}))
    await asyncio.wait_for(started.wait(), 5)
    stop.set()
    await asyncio.wait_for(task, 2)  # the grace period, not the job, bounds the shutdown
    back = broker.queue("slow").pop()
    assert back is not None and back.message_id == "j-1" and back.redelivered
    assert len(broker.queue(p.JOB_COMPLETED)) == len(broker.queue(p.JOB_STOPPED)) == 0


async def test_a_restarted_backend_arms_timeouts_only_for_jobs_still_in_flight(tmp_path: Path) -> None:
    store = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp_path / "s.sqlite")}
    engine = WorkflowEngine(env=store)
    timed = one_step(timeout_s=0.2)
    finished = [engine.start_workflow(timed) for _ in range(3)]
    for workflow_id in finished:
        job_id = next(iter(engine.workflow_state(workflow_id).jobs))
        engine.command(cmd.RecordCompleted(workflow_id=workflow_id, job_id=job_id, cause=f"done-{job_id}"))
    stranded = engine.start_workflow(timed)  # its worker died with the old backend
    from stepflow.adapters.outbox import OutboxReader

    OutboxReader(engine).advance(engine.max_notification_id())  # the old backend published all four

    broker = MemoryBroker()
    broker.bindings["echo"] = "echo"  # a worker serves the type, but it is gone
    backend = await _backend_with(WorkflowEngine(env=store), broker)  # the restart
    try:
        # armed at start-up: the stranded job only, none of the three that finished
        (stranded_job,) = engine.workflow_state(stranded).jobs
        assert backend.deadlines.armed() == {stranded_job: (stranded, 0.2)}
        await eventually(lambda: backend.stats["timeouts"], what="the stranded job's timeout")
        assert backend.deadlines.armed() == {}  # its clock ended, and no other clock runs
    finally:
        await backend.stop()
    assert kinds(engine, stranded)["JobTimedOut"] == 1, kinds(engine, stranded)
    assert backend.stats["timeouts"] == 1  # no RecordTimeout for the three finished jobs


async def test_an_answer_naming_its_job_by_wire_id_stops_the_jobs_clock() -> None:
    """Workers answer with the integer wire id only; the backend learns the job from the
    engine, so a finished job's deadline ends and a progressing one's is pushed back."""
    engine = memory_engine()
    progressed = asyncio.Event()
    release = asyncio.Event()
    worker = Worker("slowish", instance_id="slowish-1")

    @worker.job("echo")
    async def echo(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        await ctx.progress(50)
        progressed.set()
        await release.wait()
        return {}

    async with EmbeddedRuntime(engine, [worker]) as runtime:
        workflow_id = await runtime.start(one_step(timeout_s=30))
        await asyncio.wait_for(progressed.wait(), 10)
        (job_id,) = engine.workflow_state(workflow_id).jobs
        await eventually(lambda: engine.workflow_state(workflow_id).jobs[job_id].progression == 50)
        clocks = runtime.backend.deadlines
        assert set(clocks.armed()) == {job_id}  # the engine's id, not the wire's
        release.set()
        assert (await runtime.wait(workflow_id, timeout=10)).status == "completed"
        assert clocks.armed() == {}
