"""Deliveries read straight off aiormq (`stepflow.adapters.amqp.consumers`), on the real broker.

aio-pika's `IncomingMessage` is counted (the module global its consumer wrapper builds): on
the direct path none is built. After the broker drops the connection, aio-pika restores the
consumers with its own wrapper; every message still arrives, and the direct path comes back.
"""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from typing import Any

import aio_pika
import aio_pika.queue
import aiormq
import amqp_fixtures
import pytest
from amqp_fixtures import Rabbit, close_connections

from stepflow.adapters import protocol as p
from stepflow.adapters.amqp import AmqpBackendBroker, AmqpWorkerBroker
from stepflow.adapters.amqp.connection import AmqpDelivery

pytestmark = [pytest.mark.integration, pytest.mark.rabbitmq]
rabbit = amqp_fixtures.rabbit  # the fixture


@pytest.fixture
def wrapped(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many deliveries went through aio-pika's wrapper (an `IncomingMessage` each)."""
    count = [0]

    class Counted(aio_pika.queue.IncomingMessage):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            count[0] += 1
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(aio_pika.queue, "IncomingMessage", Counted)
    return count


async def _send(rabbit: Rabbit, queue: str, n: int, first: int = 0) -> None:
    for i in range(first, first + n):
        await rabbit.publish(p.JOB_RESPONSE, queue, b'{"job_id": 1, "status": "completed"}',
                             message_id=f"m{i}", headers={"workflow_id": f"wf-{i}"},
                             content_type=p.CONTENT_TYPE)


async def _take(broker: AmqpBackendBroker, n: int, timeout: float = 20) -> list[AmqpDelivery]:
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        got += await asyncio.wait_for(broker.next_batch(64, 0), max(0.1, deadline - time.monotonic()))
    await broker.ack(got)
    return got


async def _three_through_a_backend(rabbit: Rabbit) -> list[AmqpDelivery]:
    broker = AmqpBackendBroker(rabbit.url, prefix=rabbit.prefix)
    await broker.connect()
    try:
        await _send(rabbit, p.JOB_COMPLETED, 3)
        return await _take(broker, 3)
    finally:
        await broker.close()


async def test_the_backend_reads_deliveries_without_aio_pikas_wrapper(rabbit: Rabbit, wrapped: list[int]) -> None:
    got = await _three_through_a_backend(rabbit)
    assert wrapped[0] == 0
    assert [(d.queue, d.message_id, d.headers["workflow_id"], d.redelivered) for d in got] == [
        (p.JOB_COMPLETED, f"m{i}", f"wf-{i}", False) for i in range(3)]
    assert got[0].content_type == p.CONTENT_TYPE and got[0].real_queue == rabbit.topology.name(p.JOB_COMPLETED)
    assert (await rabbit.depth(p.JOB_COMPLETED))[0] == 0  # acked


async def test_after_a_reconnection_nothing_is_lost_and_the_direct_path_comes_back(
        rabbit: Rabbit, wrapped: list[int]) -> None:
    broker = AmqpBackendBroker(rabbit.url, prefix=rabbit.prefix, connection_name=f"direct[{rabbit.prefix}]")
    await broker.connect()
    try:
        await _send(rabbit, p.JOB_COMPLETED, 2)
        await _take(broker, 2)
        assert wrapped[0] == 0
        assert await asyncio.to_thread(close_connections, f"direct[{rabbit.prefix}]") == 1
        await rabbit.wait_depth(p.JOB_COMPLETED, consumers=1, timeout=20)
        # Until the reopen callback has run, aio-pika's wrapper serves: each message still arrives.
        sent = 2
        deadline = time.monotonic() + 20
        while True:
            before = wrapped[0]
            await _send(rabbit, p.JOB_COMPLETED, 1, first=sent)
            (delivery,) = await _take(broker, 1)
            assert delivery.message_id == f"m{sent}"
            sent += 1
            if wrapped[0] == before:
                break  # read on the direct path again
            assert time.monotonic() < deadline, "the direct path did not come back"
            await asyncio.sleep(0.05)
    finally:
        await broker.close()
    assert (await rabbit.depth(p.JOB_COMPLETED))[0] == 0


async def test_a_worker_reads_its_orders_and_direct_orders_without_the_wrapper(
        rabbit: Rabbit, wrapped: list[int]) -> None:
    worker = AmqpWorkerBroker(rabbit.url, prefix=rabbit.prefix)
    await worker.connect()
    try:
        await worker.consume_orders(["media_probe"], prefetch=4)
        instance = uuid.uuid4().hex[:12]
        await worker.consume_direct(instance, ["media_probe"])
        await rabbit.publish(p.JOB_SUBMIT, "media_probe", b"{}", message_id="order-1")
        order = await asyncio.wait_for(worker.next_order(), 20)
        await worker.ack(order)
        # paused and resumed: the new consumer is on the direct path too
        await worker.pause_orders()
        await worker.resume_orders()
        await rabbit.publish(p.JOB_SUBMIT, "media_probe", b"{}", message_id="order-2")
        second = await asyncio.wait_for(worker.next_order(), 20)
        await worker.ack(second)
        await rabbit.publish(p.DIRECT_MESSAGING, "", b'{"type": "status"}', message_id="direct-1",
                             headers={"instance_id": instance})
        direct = await asyncio.wait_for(worker.next_direct(), 20)
        await worker.ack(direct)
    finally:
        await worker.close()
    assert (order.message_id, order.queue, second.message_id) == ("order-1", "media_probe", "order-2")
    assert direct.message_id == "direct-1" and direct.headers["instance_id"] == instance
    assert wrapped[0] == 0


async def test_an_aiormq_without_its_consumer_table_keeps_aio_pikas_wrapper(
        rabbit: Rabbit, wrapped: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """The direct path reaches into aiormq's channel; another aiormq only costs the saving."""
    original = aiormq.Channel.__init__

    def other_table(self: aiormq.Channel, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.consumers = collections.UserDict()  # type: ignore[assignment]

    monkeypatch.setattr(aiormq.Channel, "__init__", other_table)
    got = await _three_through_a_backend(rabbit)
    assert [d.message_id for d in got] == ["m0", "m1", "m2"]
    assert wrapped[0] == 3


async def test_a_worker_quarantines_an_order_it_cannot_read_and_goes_on(
        rabbit: Rabbit, wrapped: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever makes reading a delivery raise, the order is kept (quarantined, then acked),
    never held, and the next one is read."""
    read = AmqpDelivery.delivered.__func__  # type: ignore[attr-defined]

    def fails_on_bad(cls: type[AmqpDelivery], message: Any, queue: str, real: str) -> AmqpDelivery:
        if message.header.properties.message_id == "bad":
            raise ValueError("cannot read this one")
        return read(cls, message, queue, real)  # type: ignore[no-any-return]

    monkeypatch.setattr(AmqpDelivery, "delivered", classmethod(fails_on_bad))
    worker = AmqpWorkerBroker(rabbit.url, prefix=rabbit.prefix)
    await worker.connect()
    try:
        await worker.consume_orders(["media_probe"], prefetch=4)
        await rabbit.publish(p.JOB_SUBMIT, "media_probe", b'{"unreadable": 1}', message_id="bad")
        await rabbit.publish(p.JOB_SUBMIT, "media_probe", b"{}", message_id="good")
        order = await asyncio.wait_for(worker.next_order(), 20)
        await worker.ack(order)
        assert wrapped[0] == 0  # before the test reads the quarantine (its get makes one)
        (kept,) = await _eventually_one(rabbit, p.QUARANTINE)
    finally:
        await worker.close()
    assert order.message_id == "good"
    assert kept.body == b'{"unreadable": 1}' and kept.headers["x-original-queue"] == "media_probe"
    assert "cannot read this one" in kept.headers["x-stepflow-worker-rejected"]
    assert await rabbit.depth("media_probe") == (0, 0)


async def _eventually_one(rabbit: Rabbit, queue: str) -> list[Any]:
    deadline = time.monotonic() + 20
    while not (got := await rabbit.take_all(queue)):
        assert time.monotonic() < deadline, f"nothing reached {queue}"
        await asyncio.sleep(0.05)
    return got
