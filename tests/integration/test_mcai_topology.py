"""stepflow and an unmodified mcai worker (mcai-worker-sdk 2.1.1) declare the same names with
the same arguments, so either may declare first. A mismatch is not a warning: RabbitMQ closes
the channel (PRECONDITION_FAILED), and the SDK then hangs as a zombie worker.

The SDK's declarations are replayed here with plain aio-pika, argument for argument, as
observed with `rabbitmqctl` (docs/research/mcai-worker-sdk-2.1.1.md, section 2.1). Each test
has its own vhost, so the names are the original's, unprefixed.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import amqp_fixtures
import pytest
from amqp_fixtures import AMQP_URL, Procs, Rabbit, sqlite_store

from stepflow.adapters import protocol as p

pytestmark = [pytest.mark.integration, pytest.mark.rabbitmq, pytest.mark.e2e]

JOB_TYPE = "slow_sleep"  # served by the fixture worker; AMQP_QUEUE of the pretend mcai worker
INSTANCE = "a2bd0f56-4764-48f2-92fe-a0f90fe36077"
CLASSIC = {"x-queue-type": "classic"}


async def declare_like_the_sdk(channel: aio_pika.abc.AbstractChannel, queue: str = JOB_TYPE,
                               cluster: bool = False) -> None:
    """What mcai-worker-sdk 2.1.1 declares at start, in its order. With
    AMQP_SERVER_CONFIGURATION=cluster (`cluster`): the same exchanges; every queue quorum and
    durable, the job queue without x-max-priority, the direct queue durable and not auto-delete."""
    kind = {"x-queue-type": "quorum"} if cluster else CLASSIC
    priority = {} if cluster else {"x-max-priority": 100}
    topic, headers, fanout = aio_pika.ExchangeType.TOPIC, aio_pika.ExchangeType.HEADERS, aio_pika.ExchangeType.FANOUT
    await channel.declare_exchange("job_submit", topic, durable=True,
                                   arguments={"alternate-exchange": "job_queue_not_found"})
    await channel.declare_exchange("job_response", topic, durable=True,
                                   arguments={"alternate-exchange": "job_response_not_found"})
    await channel.declare_exchange("worker_response", topic, durable=True,
                                   arguments={"alternate-exchange": "worker_response_not_found"})
    await channel.declare_exchange("direct_messaging", headers, durable=True,
                                   arguments={"alternate-exchange": "direct_messaging_not_found"})
    delayed = await channel.declare_exchange("job_delayed", fanout, durable=True)
    delayed_queue = await channel.declare_queue(
        "job_delayed", durable=True, arguments={"x-dead-letter-exchange": "", "x-message-ttl": 5000, **kind})
    await delayed_queue.bind(delayed, routing_key="*")
    await channel.declare_queue("worker_discovery", durable=True, arguments={
        "x-dead-letter-exchange": "job_response_delayed", "x-dead-letter-routing-key": "worker_discovery",
        **kind})
    await channel.declare_queue("worker_response_not_found", durable=True, arguments=kind)
    jobs = await channel.declare_queue(queue, durable=True, arguments={
        "x-dead-letter-exchange": "job_delayed", "x-dead-letter-routing-key": queue, **priority, **kind})
    await jobs.bind("job_submit", routing_key=queue)
    direct = await channel.declare_queue(f"direct_messaging_{INSTANCE}", durable=cluster, auto_delete=not cluster,
                                         arguments=kind)
    await direct.bind("direct_messaging", routing_key="*", arguments={
        "x-match": "any", "broadcast": "true", "instance_id": INSTANCE, "job_type": queue,
        "worker_name": "echo_worker", "worker_version": "1.2.3"})


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def vhost() -> Iterator[Rabbit]:
    """A vhost of its own (deleted afterwards), and no prefix: the original's names."""
    amqp_fixtures._probe_rabbit(AMQP_URL)
    name = f"mcai_topo_{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield Rabbit(f"{AMQP_URL.rstrip('/')}/{name}", "")
    finally:
        rabbitmqctl("delete_vhost", name)


def run_on(rabbit: Rabbit, fn: Callable[[Any], Any]) -> Any:
    return asyncio.run(rabbit.channel_do(fn))


def start_stepflow(rabbit: Rabbit, tmp_path: Path) -> Procs:
    procs = Procs(rabbit, sqlite_store(tmp_path), tmp_path)
    procs.serve()
    procs.worker("stepflow-worker", amqp_fixtures.FIXTURE_WORKERS, JOB_TYPE)
    asyncio.run(rabbit.wait_depth(p.JOB_COMPLETED, consumers=1, timeout=30))
    asyncio.run(rabbit.wait_depth(JOB_TYPE, consumers=1, timeout=30))
    asyncio.run(rabbit.wait_depth(p.WORKER_DISCOVERY, consumers=1, timeout=30))
    return procs


def assert_healthy(procs: Procs) -> None:
    assert all(proc.alive() for proc in procs.all), procs.logs()
    assert "PRECONDITION_FAILED" not in procs.logs() and "inequivalent" not in procs.logs(), procs.logs()


def test_the_sdk_declares_first_then_stepflow_starts(vhost: Rabbit, tmp_path: Path) -> None:
    run_on(vhost, declare_like_the_sdk)
    procs = start_stepflow(vhost, tmp_path)
    try:
        assert_healthy(procs)
        run_on(vhost, declare_like_the_sdk)  # the SDK reconnecting: still equal
        assert_healthy(procs)
    finally:
        for proc in procs.all:
            proc.terminate(10)
        procs.close()


def test_stepflow_declares_first_then_the_sdk(vhost: Rabbit, tmp_path: Path) -> None:
    procs = start_stepflow(vhost, tmp_path)
    try:
        run_on(vhost, declare_like_the_sdk)  # raises ChannelPreconditionFailed on any difference
        run_on(vhost, lambda channel: declare_like_the_sdk(channel, "job_echo"))  # a type stepflow never saw
        assert_healthy(procs)
    finally:
        for proc in procs.all:
            proc.terminate(10)
        procs.close()
    # The SDK announces itself on job_response (key worker_discovery), which it never binds:
    # stepflow's binding brings it to the worker_discovery queue.
    before = asyncio.run(vhost.depth(p.WORKER_DISCOVERY))[0]
    asyncio.run(vhost.publish(p.JOB_RESPONSE, p.WORKER_DISCOVERY, b"{}", delivery_mode=2))
    asyncio.run(vhost.wait_depth(p.WORKER_DISCOVERY, messages=before + 1))
    # A job order published for the SDK's queue reaches it, at the SDK's top priority.
    asyncio.run(vhost.publish(p.JOB_SUBMIT, "job_echo", b"{}", priority=100))
    asyncio.run(vhost.wait_depth("job_echo", messages=1))
