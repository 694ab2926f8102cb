"""The RabbitMQ adapter against the real broker, backend and workers in this process.

Each test has its own name prefix (fixture `rabbit`), so they share the broker without
seeing each other. The process-level crash tests are in tests/e2e/test_amqp_processes.py.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import amqp_fixtures
import msgspec
import pytest
from amqp_fixtures import EXAMPLES, Rabbit, close_connections, event_counts, one_step, slow

from stepflow.adapters import protocol as p
from stepflow.adapters.amqp import AmqpBackendBroker, AmqpWorkerBroker, Topology
from stepflow.adapters.amqp.backend_broker import ack_plan
from stepflow.adapters.amqp.runtime import AmqpRuntime
from stepflow.adapters.workers_loading import load_workers
from stepflow.engine import commands as cmd
from stepflow.engine import events as ev
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.definitions import load_definition
from stepflow.sdk import JobContext, Worker

pytestmark = [pytest.mark.integration, pytest.mark.rabbitmq]
rabbit = amqp_fixtures.rabbit  # the fixture

MEDIA = EXAMPLES / "media" / "workflow.toml"


def memory_engine() -> WorkflowEngine:
    return WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def media_workers() -> list[Worker]:
    return load_workers([], MEDIA)


SMALL_MEDIA = {"renditions": ["360p", "720p"], "size_kib": 16}


# --- topology ----------------------------------------------------------------------------


async def test_topology_is_idempotent_and_prefixes_keep_installations_apart(rabbit: Rabbit) -> None:
    other = Rabbit(rabbit.url, rabbit.prefix + "b_")
    try:
        await rabbit.declare("media_probe")
        await rabbit.declare("media_probe")  # again: same arguments, no error
        await other.declare()
        assert Topology("x_").job_submit == "x_job_submit" and Topology().quarantine == "stepflow_quarantine"
        for queue in (*p.RESPONSE_KEYS, *p.WORKER_KEYS, p.JOB_QUEUE_NOT_FOUND, p.QUARANTINE, "media_probe"):
            assert await rabbit.depth(queue) == (0, 0)
        # An order for a served type reaches its queue; for another, job_queue_not_found, and
        # only this installation's.
        headers = {"workflow_id": "w", "job_type": "media_probe"}
        await rabbit.publish(p.JOB_SUBMIT, "media_probe", b"{}", headers=headers)
        await rabbit.publish(p.JOB_SUBMIT, "nobody_serves_this", b"{}", headers=headers)
        await rabbit.wait_depth("media_probe", messages=1)
        await rabbit.wait_depth(p.JOB_QUEUE_NOT_FOUND, messages=1)
        assert await other.depth(p.JOB_QUEUE_NOT_FOUND) == (0, 0)
        # Delayed orders wait in job_submit_delayed, then route by their own key (job type);
        # still unroutable if nobody serves it.
        await rabbit.publish(p.JOB_SUBMIT_DELAYED, "media_probe", b"{}", expiration=0.2, headers=headers)
        await rabbit.publish(p.JOB_SUBMIT_DELAYED, "nobody_serves_this", b"{}", expiration=0.2, headers=headers)
        assert (await rabbit.depth(p.JOB_SUBMIT_DELAYED))[0] == 2
        await rabbit.wait_depth("media_probe", messages=2)
        await rabbit.wait_depth(p.JOB_QUEUE_NOT_FOUND, messages=2)
        # An order rejected without requeue (as the mcai SDK does) waits 5 s in job_delayed,
        # then comes back to its own queue.
        async def reject_one(channel: Any) -> None:
            queue = await channel.declare_queue(rabbit.prefix + "media_probe", passive=True)
            message = await queue.get()
            await message.reject(requeue=False)

        await rabbit.channel_do(reject_one)
        await rabbit.wait_depth("media_probe", messages=1)
        await rabbit.wait_depth(p.JOB_DELAYED, messages=1)
        await rabbit.wait_depth("media_probe", messages=2, timeout=10)
        assert (await rabbit.depth(p.QUARANTINE))[0] == 0
        # Responses route by key to the queue of the same name.
        for key in (*p.RESPONSE_KEYS, *p.WORKER_KEYS):
            exchange = p.WORKER_RESPONSE if key in p.WORKER_KEYS else p.JOB_RESPONSE
            await rabbit.publish(exchange, key, b"{}")
            await rabbit.wait_depth(key, messages=1)
    finally:
        await other.cleanup()


def test_ack_plan_acks_multiple_only_over_a_contiguous_run() -> None:
    # Outstanding 1..6; the batch holds 1,2,3,5: one multiple ack to 3, then 5 alone (4 and 6
    # are another batch's and must stay unacked).
    assert ack_plan({1, 2, 3, 4, 5, 6}, [5, 1, 3, 2]) == (3, [5])
    assert ack_plan({1, 2, 3}, [1, 2, 3]) == (3, [])
    assert ack_plan({4, 7}, [7]) == (0, [7])
    assert ack_plan({1, 2}, [1]) == (0, [1])  # one message: a plain ack


# --- the protocol end to end, in one process ----------------------------------------------


async def test_media_example_runs_over_rabbitmq_and_workers_announce_themselves(rabbit: Rabbit) -> None:
    engine = memory_engine()
    seen: list[Any] = []
    workers = media_workers()
    async with AmqpRuntime(engine, workers, url=rabbit.url, prefix=rabbit.prefix,
                           on_worker=lambda message, at: seen.append(message)) as runtime:
        workflow_id = await runtime.start(load_definition(MEDIA), SMALL_MEDIA)
        state = await runtime.wait(workflow_id, timeout=20)
        assert state.status == "completed", state.reason
        counts = event_counts(engine, workflow_id)
        assert counts["JobCompleted"] == counts["JobSubmitted"] == 4
        assert counts["JobProgressed"] >= 4
        assert state.steps["package"].outputs  # fan-in got every rendition's outputs
    discovery = [m for m in seen if isinstance(m, p.WorkerDiscovery)]
    assert discovery, "no worker_discovery reached the backend"
    first = discovery[0]
    assert first.instance_id == workers[0].instance_id
    assert set(first.job_types) == {"media_probe", "media_transcode", "media_package"}
    assert first.version == "1.0.0" and first.host and isinstance(first.started_at, datetime)
    assert first.direct_messaging_queue_name == f"direct_messaging_{first.instance_id}"
    assert "TranscodeParams" in first.parameters["media_transcode"]["$defs"]  # JSON Schema of its parameters


async def test_an_order_for_an_unknown_job_type_ends_unroutable_and_the_workflow_says_so(rabbit: Rabbit) -> None:
    engine = memory_engine()
    async with AmqpRuntime(engine, [], url=rabbit.url, prefix=rabbit.prefix) as runtime:
        workflow_id = await runtime.start(one_step("nobody_serves_this"))
        state = await runtime.wait(workflow_id, timeout=15)
    assert state.status == "error"
    (job,) = state.jobs.values()
    assert job.status == "unroutable"
    assert "nobody_serves_this" in (job.error or "") and "unroutable" in (state.reason or "")
    assert event_counts(engine, workflow_id)["JobUnroutable"] == 1
    assert (await rabbit.depth(p.JOB_QUEUE_NOT_FOUND))[0] == 0  # consumed and acked


async def test_a_response_delivered_twice_changes_state_once(rabbit: Rabbit) -> None:
    await rabbit.declare("dup_job")
    engine = memory_engine()
    async with AmqpRuntime(engine, [], url=rabbit.url, prefix=rabbit.prefix) as runtime:
        workflow_id = await runtime.start(one_step("dup_job"))
        await rabbit.wait_depth("dup_job", messages=1)
        (order_message_,) = await rabbit.take_all("dup_job")
        order = p.decode_order(order_message_.body)
        result = p.JobResult(job_id=order.job_id, status="completed", workflow_id=str(workflow_id),
                             parameters=[p.Parameter(id="answer", type="integer", value=42)])
        for _ in range(2):  # the same message (same id) twice, as a broker redelivery would
            await rabbit.publish(p.JOB_RESPONSE, p.JOB_COMPLETED, p.encoder.encode(result),
                                 message_id=f"{order.job_id}:completed", content_type=p.CONTENT_TYPE,
                                 headers={"workflow_id": str(workflow_id), "job_type": "dup_job"})
        deadline = time.monotonic() + 10
        while runtime.backend.stats["messages"] < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        state = await runtime.wait(workflow_id, timeout=10)
        version = state.version
        await asyncio.sleep(0.2)
        assert runtime.backend.stats["messages"] == 2 and runtime.backend.stats["quarantined"] == 0
        assert (await runtime.state(workflow_id)).version == version
    assert state.status == "completed"
    assert state.jobs[state.wires[order.job_id]].outputs == {"answer": 42}  # found by its wire id
    assert event_counts(engine, workflow_id)["JobCompleted"] == 1
    assert (await rabbit.depth(p.JOB_COMPLETED))[0] == 0


async def test_malformed_responses_go_to_quarantine_with_their_reason_and_the_backend_goes_on(
        rabbit: Rabbit) -> None:
    engine = memory_engine()
    async with AmqpRuntime(engine, media_workers(), url=rabbit.url, prefix=rabbit.prefix) as runtime:
        await rabbit.publish(p.JOB_RESPONSE, p.JOB_COMPLETED, b"\x00not json", message_id="bad-1",
                             content_type=p.CONTENT_TYPE)
        await rabbit.publish(p.JOB_RESPONSE, p.JOB_ERROR, b'{"job_id": 7}', message_id="bad-2",
                             content_type=p.CONTENT_TYPE, headers={"workflow_id": "not-a-uuid"})
        await rabbit.publish(p.JOB_RESPONSE, p.JOB_PROGRESSION, b"<xml/>", message_id="bad-3",
                             content_type="text/xml")
        await rabbit.wait_depth(p.QUARANTINE, messages=3)
        workflow_id = await runtime.start(load_definition(MEDIA), SMALL_MEDIA)
        state = await runtime.wait(workflow_id, timeout=20)
        assert runtime.backend.stats["quarantined"] == 3
    assert state.status == "completed"
    kept = {m.message_id: m for m in await rabbit.take_all(p.QUARANTINE)}
    assert set(kept) == {"bad-1", "bad-2", "bad-3"}
    assert kept["bad-1"].body == b"\x00not json"
    assert kept["bad-1"].headers["x-original-queue"] == p.JOB_COMPLETED
    assert "invalid job_completed message" in kept["bad-1"].headers["x-quarantine-reason"]
    assert "job_id" in kept["bad-2"].headers["x-quarantine-reason"]
    assert "content type" in kept["bad-3"].headers["x-quarantine-reason"]
    for queue in (p.JOB_COMPLETED, p.JOB_ERROR, p.JOB_PROGRESSION):
        assert (await rabbit.depth(queue))[0] == 0


async def test_consumers_come_back_after_the_broker_drops_every_connection(rabbit: Rabbit) -> None:
    engine = memory_engine()
    async with AmqpRuntime(engine, media_workers(), url=rabbit.url, prefix=rabbit.prefix) as runtime:
        first = await runtime.start(load_definition(MEDIA), SMALL_MEDIA)
        assert (await runtime.wait(first, timeout=20)).status == "completed"
        closed = await asyncio.to_thread(close_connections, f"[{rabbit.prefix}]")
        assert closed >= 2  # the backend's and the worker's
        # aio-pika's robust connection reconnects; what matters is that the consumers return.
        for queue in (p.JOB_COMPLETED, p.JOB_PROGRESSION, p.JOB_QUEUE_NOT_FOUND, p.WORKER_DISCOVERY,
                      "media_probe", "media_transcode"):
            await rabbit.wait_depth(queue, consumers=1, timeout=20)
        second = await runtime.start(load_definition(MEDIA), SMALL_MEDIA)
        state = await runtime.wait(second, timeout=30)
    assert state.status == "completed", state.reason
    assert event_counts(engine, second)["JobCompleted"] == 4


async def test_a_broker_restart_is_survived_and_orders_stored_meanwhile_go_out(rabbit: Rabbit) -> None:
    """`rabbitmqctl stop_app` / `start_app`: durable queues and persistent messages stay; the
    robust connections come back with their consumers; the outbox retries what it could not
    publish while the broker was away."""
    engine = memory_engine()
    async with AmqpRuntime(engine, media_workers(), url=rabbit.url, prefix=rabbit.prefix) as runtime:
        first = await runtime.start(load_definition(MEDIA), SMALL_MEDIA)
        assert (await runtime.wait(first, timeout=20)).status == "completed"
        try:
            await asyncio.to_thread(rabbitmqctl, "stop_app")
            during = await runtime.start(load_definition(MEDIA), SMALL_MEDIA)  # stored, not publishable
            await asyncio.sleep(0.5)
        finally:
            await asyncio.to_thread(rabbitmqctl, "start_app")
        state = await runtime.wait(during, timeout=40)
    assert state.status == "completed", state.reason
    assert event_counts(engine, during)["JobCompleted"] == 4


def rabbitmqctl(*args: str) -> None:
    import subprocess

    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


async def test_retry_backoff_is_honoured_through_the_delay_queue(rabbit: Rabbit) -> None:
    engine = memory_engine()
    definition = load_definition(EXAMPLES / "retry" / "workflow.toml")
    workers = load_workers([], EXAMPLES / "retry" / "workflow.toml")
    rabbit.job_types.update({"retry_prepare", "retry_flaky"})
    async with AmqpRuntime(engine, workers, url=rabbit.url, prefix=rabbit.prefix) as runtime:
        started = time.monotonic()
        workflow_id = await runtime.start(definition, {"fail_times": 2})
        state = await runtime.wait(workflow_id, timeout=20)
        elapsed = time.monotonic() - started
    assert state.status == "completed", state.reason
    retries = [e for e in engine.history(workflow_id) if isinstance(e, ev.JobRetryScheduled)]
    assert len(retries) == 2
    assert elapsed >= 0.1 + 0.2  # backoff 0.1 s, then 0.2 s: each order waited in job_submit_delayed
    assert await rabbit.depth(p.JOB_SUBMIT_DELAYED) == (0, 0)


# --- the worker SDK over AMQP -------------------------------------------------------------


def counting_worker() -> tuple[Worker, list[str]]:
    ran: list[str] = []
    worker = Worker("counting", heartbeat_s=0.5)

    @worker.job("count_job")
    async def count(params: dict, ctx: JobContext) -> dict:
        ran.append(ctx.job_id)
        return {"n": len(ran)}

    return worker, ran


async def test_a_worker_answers_an_order_it_already_completed_without_running_it(rabbit: Rabbit) -> None:
    engine = memory_engine()
    worker, ran = counting_worker()
    rabbit.job_types.add("count_job")
    async with AmqpRuntime(engine, [worker], url=rabbit.url, prefix=rabbit.prefix) as runtime:
        workflow_id = await runtime.start(one_step("count_job"))
        assert (await runtime.wait(workflow_id, timeout=10)).status == "completed"
        # The outbox republishes after a crash between publish and advancing its position:
        submitted = next(e for e in engine.history(workflow_id) if isinstance(e, ev.JobSubmitted))
        await runtime.backend.broker.publish_orders([submitted])
        await rabbit.wait_depth("count_job", messages=0)
        await rabbit.wait_depth(p.JOB_COMPLETED, messages=0)
        await asyncio.sleep(0.2)
    assert ran == [str(submitted.wire_id)]  # run once, answered twice (the worker knows its wire id)
    assert event_counts(engine, workflow_id)["JobCompleted"] == 1


async def test_direct_orders_reach_one_worker_by_instance_job_type_or_broadcast(rabbit: Rabbit) -> None:
    engine = memory_engine()
    worker, ran = counting_worker()
    rabbit.job_types.add("count_job")
    statuses: list[p.WorkerStatus] = []
    heartbeats: list[p.WorkerDiscovery] = []

    def on_worker(message: Any, at: datetime) -> None:
        if isinstance(message, p.WorkerStatus):
            statuses.append(message)
        else:
            heartbeats.append(message)

    def direct(kind: str, **headers: Any) -> p.Message:
        return p.Message(routing_key="", body=p.encoder.encode(p.DirectOrder(type=kind)),  # type: ignore[arg-type]
                         message_id=f"{kind}-{time.monotonic_ns()}", headers=headers)

    async with AmqpRuntime(engine, [worker], url=rabbit.url, prefix=rabbit.prefix, on_worker=on_worker) as runtime:
        broker = runtime.backend.broker
        await broker.publish_direct(direct("status", instance_id=worker.instance_id))
        await broker.publish_direct(direct("status", job_type="count_job"))
        await broker.publish_direct(direct("status", broadcast="true"))  # a string, as the original binds it
        await broker.publish_direct(direct("status", stepflow_broadcast="true"))  # stepflow's workers only
        await broker.publish_direct(direct("status", broadcast=True))  # an AMQP boolean matches nobody
        await broker.publish_direct(direct("status", instance_id="someone-else"))
        deadline = time.monotonic() + 10
        while len(statuses) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        assert len(statuses) == 4 and statuses[0].instance_id == worker.instance_id
        assert statuses[0].worker.activity == "Idle"

        await broker.publish_direct(direct("stop_consuming_jobs", instance_id=worker.instance_id))
        await rabbit.wait_depth("count_job", consumers=0)
        workflow_id = await runtime.start(one_step("count_job"))
        await rabbit.wait_depth("count_job", messages=1)  # waits: nobody consumes
        assert ran == []
        await broker.publish_direct(direct("resume_consuming_jobs", instance_id=worker.instance_id))
        assert (await runtime.wait(workflow_id, timeout=10)).status == "completed"
        assert len(ran) == 1
        deadline = time.monotonic() + 5
        while len(heartbeats) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(heartbeats) >= 2  # discovery at start, then repeated as a heartbeat (0.5 s here)
        assert {h.instance_id for h in heartbeats} == {worker.instance_id}


async def test_worker_broker_survives_its_connection_being_dropped_mid_job(rabbit: Rabbit, tmp_path: Path) -> None:
    """A job running while the worker's connection drops: its order is redelivered (the old
    delivery tag is never used on the new channel) and the job completes once."""
    engine = memory_engine()
    hold, journal = tmp_path / "hold", tmp_path / "journal"
    hold.touch()
    async with AmqpRuntime(engine, [slow], url=rabbit.url, prefix=rabbit.prefix) as runtime:
        workflow_id = await runtime.start(one_step("slow_sleep", parameters={"hold": str(hold),
                                                                             "journal": str(journal)}))
        deadline = time.monotonic() + 10
        while not journal.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        closed = await asyncio.to_thread(close_connections, f"stepflow-worker[{rabbit.prefix}]")
        assert closed == 1
        await asyncio.sleep(0.3)
        hold.unlink()
        state = await runtime.wait(workflow_id, timeout=20)
    assert state.status == "completed", state.reason
    assert event_counts(engine, workflow_id)["JobCompleted"] == 1


def test_brokers_mask_credentials_in_what_they_log() -> None:
    from stepflow.adapters.amqp import mask_url

    assert mask_url("amqp://user:s3cret@rabbit:5672/vh") == "amqp://user:***@rabbit:5672/vh"
    assert AmqpBackendBroker("amqp://u:pw@h/").url == "amqp://u:pw@h/"  # kept, only never logged
    assert AmqpWorkerBroker("amqp://u:pw@h/", prefix="x_").topology.job_submit == "x_job_submit"
    assert msgspec.json.decode(p.encoder.encode(p.DirectOrder(type="stop_worker")))["type"] == "stop_worker"
    assert cmd.StopWorkflow  # the stop path is exercised in tests/e2e/test_amqp_processes.py


async def test_prefetch_bounds_the_jobs_a_worker_runs_at_once_over_all_its_types(rabbit: Rabbit) -> None:
    await rabbit.declare("pf_a", "pf_b")
    running, peak = 0, 0
    release = asyncio.Event()
    worker = Worker("prefetch", prefetch=2)

    async def hold(params: dict, ctx: JobContext) -> dict:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1
        return {}

    worker.job("pf_a")(hold)
    worker.job("pf_b")(hold)
    broker = AmqpWorkerBroker(rabbit.url, prefix=rabbit.prefix)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(broker, stop=stop))
    await asyncio.wait_for(broker.ready.wait(), 10)
    for i in range(3):
        for job_type in ("pf_a", "pf_b"):
            order = p.JobOrder(job_id=f"{job_type}-{i}", parameters=[])
            await rabbit.publish(p.JOB_SUBMIT, job_type, p.encoder.encode(order), message_id=order.job_id,
                                 headers={"workflow_id": "00000000-0000-0000-0000-000000000000",
                                          "job_type": job_type})
    await asyncio.sleep(0.5)
    assert peak == 2 and running == 2
    release.set()
    await rabbit.wait_depth("pf_a", messages=0)
    await rabbit.wait_depth("pf_b", messages=0)
    deadline = time.monotonic() + 5
    while worker.completed < 6 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert worker.completed == 6 and peak == 2
    rabbit.job_types.update({"pf_a", "pf_b"})
