"""The broker contract: the same checks on the in-process broker and on RabbitMQ.

The backend and the worker SDK are written against the ports of `stepflow.engine.ports`
(`BackendBroker`, `WorkerBroker`, `Delivery`) only, so whatever one broker does through them
the other must do too. Each check runs on both (`broker` is parametrized), through the ports
and nothing else: an order reaches a worker of its type, unchanged and by priority; an order
no queue takes comes back as `job_queue_not_found`; a worker's response reaches the backend
with its queue and message id; what a consumer held unacked when it went away comes again,
marked redelivered; stops reach every worker's direct queue; a pause holds orders back, even
from a worker already waiting for one, until resume; and `connected` says so.

Where the two differ, the check says how, in the open (`Kind`), and never skips: the
in-process broker has no connection to lose, so its `connected` stays true after `close`.
Over RabbitMQ each test has its own name prefix, and its queues are deleted afterwards
(fixture `rabbit`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import amqp_fixtures
import pytest

from stepflow.adapters import protocol as p
from stepflow.adapters.amqp import AmqpBackendBroker, AmqpWorkerBroker
from stepflow.adapters.memory.broker import MemoryBroker
from stepflow.adapters.orders import order_message, stop_message
from stepflow.engine import events as ev
from stepflow.engine.ports import BackendBroker, Delivery, StopJob, WorkerBroker

pytestmark = pytest.mark.integration
rabbit = amqp_fixtures.rabbit  # the fixture, for the RabbitMQ side

ECHO, OTHER, NOBODY = "contract_echo", "contract_other", "contract_nobody"  # NOBODY: no queue, ever
TAKE_S = 10.0  # at most, for what must arrive
QUIET_S = 0.5  # a window in which nothing may arrive (there is no event to wait for instead)


@dataclass(frozen=True)
class Kind:
    """How to make one broker's two sides, and where it differs from the other broker."""

    name: str
    backend: Callable[[], BackendBroker]
    worker: Callable[[], WorkerBroker]
    # RabbitMQ: `connected` is false once closed. In-process: there is no connection to lose,
    # and `connected` stays true (its docstring says so).
    loses_connection: bool


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def kind(request: pytest.FixtureRequest) -> Kind:
    if request.param == "memory":
        broker = MemoryBroker()
        return Kind("memory", broker.backend, broker.worker, loses_connection=False)
    handle: amqp_fixtures.Rabbit = request.getfixturevalue("rabbit")
    handle.job_types.update((ECHO, OTHER))  # deleted afterwards with the rest of the prefix's topology
    return Kind("rabbitmq", lambda: AmqpBackendBroker(handle.url, prefix=handle.prefix),
                lambda: AmqpWorkerBroker(handle.url, prefix=handle.prefix), loses_connection=True)


class Sides:
    """Connected sides of the broker under test; whatever is still open is closed at the end."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self._opened: list[BackendBroker | WorkerBroker] = []

    async def backend(self) -> BackendBroker:
        backend = self.kind.backend()
        await backend.connect()
        self._opened.append(backend)
        return backend

    async def worker(self, job_types: Sequence[str] = (), *, direct: str | None = None) -> WorkerBroker:
        """A worker's side, taking orders of `job_types` one at a time, and its direct
        queue's orders when `direct` (an instance id) is given."""
        worker = self.kind.worker()
        await worker.connect()
        self._opened.append(worker)
        if job_types:
            await worker.consume_orders(job_types, 1)
        if direct is not None:
            await worker.consume_direct(direct, job_types)
        return worker

    async def close(self) -> None:
        for side in reversed(self._opened):
            await side.close()


@pytest.fixture
async def broker(kind: Kind) -> AsyncIterator[Sides]:
    sides = Sides(kind)
    yield sides
    await sides.close()


def submitted(job_type: str = ECHO, *, priority: int = 0) -> ev.JobSubmitted:
    """A stored order, as the outbox hands it to `publish_orders`."""
    return ev.JobSubmitted(originator_id=uuid.uuid4(), originator_version=2, timestamp=datetime.now(UTC),
                           job_id=f"job-{uuid.uuid4().hex[:12]}", step_id="only", index=0, attempt=1,
                           job_type=job_type, parameters={"x": 1}, priority=priority, timeout_s=30.0)


async def taken(backend: BackendBroker, count: int) -> list[Delivery]:
    """The next `count` inbound messages of the backend, unacked."""
    got: list[Delivery] = []
    async with asyncio.timeout(TAKE_S):
        while len(got) < count:
            got.extend(await backend.next_batch(count - len(got), 0))
    return got


async def order(worker: WorkerBroker) -> Delivery:
    return await asyncio.wait_for(worker.next_order(), TAKE_S)


# --- connection --------------------------------------------------------------------------


async def test_connected_says_whether_the_broker_can_be_reached(broker: Sides) -> None:
    backend, worker = await broker.backend(), await broker.worker([ECHO])
    assert backend.connected and worker.connected
    await backend.close()
    await worker.close()
    if broker.kind.loses_connection:
        assert not backend.connected and not worker.connected
    else:  # in-process: no connection to lose, so closing does not change it
        assert backend.connected and worker.connected


# --- job orders --------------------------------------------------------------------------


async def test_an_order_reaches_a_worker_of_its_type_unchanged(broker: Sides) -> None:
    backend = await broker.backend()
    echo, other = await broker.worker([ECHO]), await broker.worker([OTHER])
    stored = submitted(ECHO, priority=3)
    await backend.publish_orders([stored])
    delivery = await order(echo)
    wire = order_message(stored)
    assert (delivery.queue, delivery.message_id, delivery.body) == (ECHO, stored.job_id, wire.body)
    assert delivery.content_type == p.CONTENT_TYPE and not delivery.redelivered
    assert {k: delivery.headers.get(k) for k in wire.headers} == dict(wire.headers)
    await echo.ack(delivery)
    pending = asyncio.create_task(other.next_order())  # another type's worker gets nothing
    done, _ = await asyncio.wait({pending}, timeout=QUIET_S)
    pending.cancel()
    assert not done


async def test_orders_are_delivered_by_priority(broker: Sides) -> None:
    backend, worker = await broker.backend(), await broker.worker([ECHO])
    await worker.pause_orders()  # so that all three wait on the queue together
    orders = [submitted(ECHO, priority=n) for n in (1, 9, 5)]
    await backend.publish_orders(orders)
    await worker.resume_orders()
    seen = []
    for _ in orders:
        delivery = await order(worker)
        seen.append(delivery.message_id)
        await worker.ack(delivery)
    assert seen == [orders[1].job_id, orders[2].job_id, orders[0].job_id]


async def test_an_order_no_queue_takes_comes_back_to_the_backend_as_unroutable(broker: Sides) -> None:
    backend = await broker.backend()
    await broker.worker([ECHO])  # a queue of another type exists
    stored = submitted(NOBODY)
    await backend.publish_orders([stored])
    (delivery,) = await taken(backend, 1)
    assert (delivery.queue, delivery.message_id) == (p.JOB_QUEUE_NOT_FOUND, stored.job_id)
    assert delivery.body == order_message(stored).body and delivery.headers["job_type"] == NOBODY
    await backend.ack([delivery])


# --- responses ---------------------------------------------------------------------------


async def test_a_workers_responses_reach_the_backend_with_their_queue_and_id(broker: Sides) -> None:
    backend, worker = await broker.backend(), await broker.worker()
    sent = {key: p.Message(routing_key=key, body=b'{"job_id": "j-1", "n": "%s"}' % key.encode(),
                           message_id=f"m-{key}", headers={"workflow_id": str(uuid.uuid4())})
            for key in (*p.RESPONSE_KEYS, *p.WORKER_KEYS)}
    for message in sent.values():
        await worker.publish_response(message)
    deliveries = await taken(backend, len(sent))
    got = {d.queue: (d.message_id, d.body, d.headers["workflow_id"], d.redelivered) for d in deliveries}
    assert got == {key: (m.message_id, m.body, m.headers["workflow_id"], False) for key, m in sent.items()}
    assert {d.content_type for d in deliveries} == {p.CONTENT_TYPE}
    await backend.ack(deliveries)


async def test_next_batch_says_when_it_has_a_message_in_hand_before_its_window(broker: Sides) -> None:
    """The backend holds starts back for the batch's commit from that moment (`in_hand`)."""
    backend, worker = await broker.backend(), await broker.worker()
    calls: list[float] = []
    loop = asyncio.get_running_loop()
    waiting = asyncio.create_task(backend.next_batch(10, 0.3, lambda: calls.append(loop.time())))
    await asyncio.sleep(QUIET_S)
    assert calls == [] and not waiting.done()  # nothing in hand yet
    await worker.publish_response(p.Message(routing_key=p.JOB_PROGRESSION, body=b'{"job_id": "j", "progression": 1}',
                                            message_id="m-in-hand", headers={}))
    async with asyncio.timeout(TAKE_S):
        batch = await waiting
    returned = loop.time()
    assert [d.message_id for d in batch] == ["m-in-hand"]
    assert len(calls) == 1 and returned - calls[0] >= 0.25  # called once, before the 0.3-s window
    await backend.ack(batch)


# --- redelivery --------------------------------------------------------------------------


async def test_an_order_held_by_a_worker_that_went_away_comes_again_redelivered(broker: Sides) -> None:
    backend, first = await broker.backend(), await broker.worker([ECHO])
    stored = submitted(ECHO)
    await backend.publish_orders([stored])
    held = await order(first)
    assert not held.redelivered
    await first.close()  # gone without acking it
    second = await broker.worker([ECHO])
    again = await order(second)
    assert (again.message_id, again.body, again.redelivered) == (stored.job_id, held.body, True)
    await second.ack(again)


async def test_a_response_held_by_a_backend_that_went_away_comes_again_redelivered(broker: Sides) -> None:
    first, worker = await broker.backend(), await broker.worker()
    await worker.publish_response(p.Message(routing_key=p.JOB_COMPLETED, body=b"{}", message_id="m-held"))
    (held,) = await taken(first, 1)
    assert not held.redelivered
    await first.close()  # gone without acking it
    second = await broker.backend()
    (again,) = await taken(second, 1)
    assert (again.queue, again.message_id, again.redelivered) == (p.JOB_COMPLETED, "m-held", True)
    await second.ack([again])


# --- direct orders -----------------------------------------------------------------------


async def test_a_stop_whose_instance_is_not_known_reaches_every_stepflow_worker(broker: Sides) -> None:
    backend = await broker.backend()
    workers = [await broker.worker([ECHO], direct="contract-1"), await broker.worker([OTHER], direct="contract-2")]
    stop = StopJob(workflow_id=uuid.uuid4(), job_id="job-to-stop")
    await backend.publish_stops([stop])
    for worker in workers:
        delivery = await asyncio.wait_for(worker.next_direct(), TAKE_S)
        assert delivery.message_id == stop_message(stop).message_id
        assert p.decode_direct(delivery.body) == p.DirectOrder(type="stop_process", job_id="job-to-stop",
                                                               parameters=[])
        await worker.ack(delivery)


async def test_a_stop_goes_to_the_instance_holding_the_job_only(broker: Sides) -> None:
    backend = await broker.backend()
    holder = await broker.worker([ECHO], direct="contract-1")
    other = await broker.worker([ECHO], direct="contract-2")
    stop = StopJob(workflow_id=uuid.uuid4(), job_id="job-to-stop", wire_id=42, instance_id="contract-1")
    await backend.publish_stops([stop])
    delivery = await asyncio.wait_for(holder.next_direct(), TAKE_S)
    assert p.decode_direct(delivery.body) == p.DirectOrder(type="stop_process", job_id=42, parameters=[])
    await holder.ack(delivery)
    late: asyncio.Task[Any] = asyncio.create_task(other.next_direct())
    done, _ = await asyncio.wait({late}, timeout=QUIET_S)
    late.cancel()
    assert not done, "a stop for another instance reached this worker"


async def test_a_pause_holds_orders_back_even_from_a_worker_already_waiting_until_resume(broker: Sides) -> None:
    backend, worker = await broker.backend(), await broker.worker([ECHO])
    waiting: asyncio.Task[Any] = asyncio.create_task(worker.next_order())
    await asyncio.sleep(0)  # one turn of the loop: it waits for an order
    await worker.pause_orders()
    stored = submitted(ECHO)
    await backend.publish_orders([stored])
    done, _ = await asyncio.wait({waiting}, timeout=QUIET_S)
    assert not done, "a paused worker was handed an order"
    await worker.resume_orders()
    delivery = await asyncio.wait_for(waiting, TAKE_S)
    assert (delivery.message_id, delivery.redelivered) == (stored.job_id, False)
    await worker.ack(delivery)
    await worker.pause_orders()  # and again, with no one waiting yet
    later = submitted(ECHO)
    await backend.publish_orders([later])
    waiting = asyncio.create_task(worker.next_order())
    done, _ = await asyncio.wait({waiting}, timeout=QUIET_S)
    assert not done, "a paused worker was handed an order"
    await worker.resume_orders()
    assert (await asyncio.wait_for(waiting, TAKE_S)).message_id == later.job_id
