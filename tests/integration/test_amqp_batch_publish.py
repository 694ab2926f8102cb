"""`batch_publish` and `batch_ack`: many messages, or acks, in one write, on a real RabbitMQ.
The messages must arrive as one `basic_publish` a message would have sent them, each with its
own outcome (confirmed, returned, refused); the answers of jobs that end together, and the acks
of one turn of the event loop, must share a write."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import textwrap
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aiormq
import pytest
from aiormq.abc import ChannelFrame
from pamqp import commands as spec

from stepflow.adapters.amqp import batch_publish
from stepflow.adapters.amqp.batch_ack import AckCoalescing
from stepflow.adapters.amqp.batch_publish import Coalescing, publish_confirmed_many, publish_many
from stepflow.adapters.amqp.connection import connect, publish
from stepflow.adapters.amqp.topology import Outbound, persistent
from tests.amqp_fixtures import Rabbit, rabbit  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.rabbitmq]

# aiormq's `Channel.basic_publish`, whose steps `batch_publish._write` repeats for many messages.
# If an upgrade of aiormq changes it, this fails: carry the change over, then update the digest.
BASIC_PUBLISH_SHA256 = "cb698f9b38f245024b5ff36ab707a8097015354a2ae52153684594f9ea6e9a21"


def _digest(function: Any) -> str:
    return hashlib.sha256(textwrap.dedent(inspect.getsource(function)).encode()).hexdigest()


def test_aiormq_basic_publish_is_still_the_one_repeated() -> None:
    assert _digest(aiormq.Channel.basic_publish) == BASIC_PUBLISH_SHA256


@pytest.fixture
async def channel(rabbit: Rabbit) -> AsyncIterator[Any]:  # noqa: F811
    connection = await connect(rabbit.url, "test-batch-publish")
    try:
        yield await connection.channel(publisher_confirms=True)
    finally:
        await connection.close()


def _counting(monkeypatch: pytest.MonkeyPatch, frame_type: type) -> list[int]:
    """How many frames of `frame_type` each frame write carried (writes without one: not listed)."""
    counts: list[int] = []
    marshall = ChannelFrame.marshall

    def counted(channel_number: int, frames: Any, drain_future: Any = None) -> ChannelFrame:
        frames = list(frames)
        found = sum(isinstance(f, frame_type) for f in frames)
        if found:
            counts.append(found)
        return marshall(channel_number=channel_number, frames=frames, drain_future=drain_future)

    monkeypatch.setattr(ChannelFrame, "marshall", staticmethod(counted))
    return counts


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    return _counting(monkeypatch, spec.Basic.Publish)


@pytest.fixture
def ack_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    return _counting(monkeypatch, spec.Basic.Ack)


def _messages(n: int, tag: str) -> list[Outbound]:
    return [persistent(f'{{"n":{i}}}'.encode(), message_id=f"{tag}{i}", headers={"workflow_id": "w", "n": i},
                       priority=i % 3, expiration_s=60.0 if i % 4 == 0 else None) for i in range(n)]


async def _take(queue: Any, n: int) -> list[Any]:
    taken = []
    async with queue.iterator() as messages:
        async for message in messages:
            await message.ack()
            taken.append(message)
            if len(taken) == n:
                break
    return taken


def _seen(message: Any) -> tuple[Any, ...]:
    return (message.body, message.message_id, message.headers, message.priority, message.delivery_mode,
            message.content_type, message.expiration)


async def test_many_messages_go_in_one_write_and_arrive_as_one_by_one(
        channel: Any, rabbit: Rabbit, writes: list[int]) -> None:  # noqa: F811
    queue = await channel.declare_queue(rabbit.prefix + "batch", exclusive=True)
    exchange = channel.default_exchange
    outcomes = await publish_many([(exchange, queue.name, m) for m in _messages(40, "a")])
    assert writes == [40]
    assert all(isinstance(o, spec.Basic.Ack) for o in outcomes)
    batched = await _take(queue, 40)

    writes.clear()
    for message in _messages(40, "a"):
        await publish(exchange, message, queue.name)
    assert writes == [1] * 40
    one_by_one = await _take(queue, 40)
    assert [_seen(m) for m in batched] == [_seen(m) for m in one_by_one]


async def test_each_message_has_its_own_outcome(channel: Any, rabbit: Rabbit) -> None:  # noqa: F811
    queue = await channel.declare_queue(rabbit.prefix + "outcomes", exclusive=True)
    exchange = channel.default_exchange
    first, unroutable, second = _messages(3, "b")
    outcomes = await publish_many([(exchange, queue.name, first), (exchange, rabbit.prefix + "nobody", unroutable),
                                   (exchange, queue.name, second)])
    assert isinstance(outcomes[0], spec.Basic.Ack) and isinstance(outcomes[2], spec.Basic.Ack)
    assert isinstance(outcomes[1], aiormq.abc.DeliveredMessage)  # returned: nothing took it
    assert outcomes[1].header.properties.message_id == "b1"

    # A message the write refuses fails alone; the others are sent (one at a time then).
    outcomes = await publish_many([(exchange, queue.name, first), (exchange, "k" * 300, second)])
    assert isinstance(outcomes[0], spec.Basic.Ack)
    assert isinstance(outcomes[1], ValueError)
    assert [m.message_id for m in await _take(queue, 3)] == ["b0", "b2", "b0"]
    underlay = await channel.get_underlay_channel()
    assert not underlay.confirmations and not underlay.message_id_delivery_tag  # nothing left behind


async def test_a_refused_message_is_an_error_the_others_are_confirmed(channel: Any, rabbit: Rabbit) -> None:  # noqa: F811
    queue = await channel.declare_queue(rabbit.prefix + "refused", exclusive=True)
    exchange = channel.default_exchange
    good, bad = _messages(2, "c")
    errors = await publish_confirmed_many([(exchange, queue.name, good), (exchange, "k" * 300, bad)], what="test")
    assert errors[0] is None and isinstance(errors[1], ValueError)
    assert [m.message_id for m in await _take(queue, 1)] == ["c0"]


async def test_answers_of_jobs_that_end_together_share_a_write(
        channel: Any, rabbit: Rabbit, writes: list[int]) -> None:  # noqa: F811
    queue = await channel.declare_queue(rabbit.prefix + "answers", exclusive=True)
    answers = Coalescing("test")
    await asyncio.gather(*(answers.publish(channel.default_exchange, queue.name, m) for m in _messages(25, "d")))
    assert writes == [25]
    assert sorted(m.message_id for m in await _take(queue, 25)) == sorted(f"d{i}" for i in range(25))

    # One alone goes at once, and a refused one fails its own publisher only.
    writes.clear()
    good, bad = _messages(2, "e")
    results = await asyncio.gather(answers.publish(channel.default_exchange, queue.name, good),
                                   answers.publish(channel.default_exchange, "k" * 300, bad), return_exceptions=True)
    assert results[0] is None and isinstance(results[1], ValueError)
    assert [m.message_id for m in await _take(queue, 1)] == ["e0"]


async def test_another_aiormq_gets_one_publish_a_message(
        channel: Any, rabbit: Rabbit, writes: list[int], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    queue = await channel.declare_queue(rabbit.prefix + "fallback", exclusive=True)
    monkeypatch.setattr(batch_publish, "_INTERNALS", (*batch_publish._INTERNALS, "not_in_any_aiormq"))
    outcomes = await publish_many([(channel.default_exchange, queue.name, m) for m in _messages(5, "f")])
    assert writes == [1] * 5
    assert all(isinstance(o, spec.Basic.Ack) for o in outcomes)
    assert [m.message_id for m in await _take(queue, 5)] == [f"f{i}" for i in range(5)]


async def _held(channel: Any, queue: Any, n: int) -> list[Any]:
    for i in range(n):
        await channel.default_exchange.publish(aio_pika.Message(f"{i}".encode()), queue.name)
    held: list[Any] = []
    async with queue.iterator(no_ack=False) as messages:
        async for message in messages:
            held.append(message)
            if len(held) == n:
                break
    return held


async def test_acks_of_one_turn_go_in_one_write_and_settle_their_deliveries(
        channel: Any, rabbit: Rabbit, ack_writes: list[int]) -> None:  # noqa: F811
    await channel.set_qos(prefetch_count=50)
    queue = await channel.declare_queue(rabbit.prefix + "acks", exclusive=True)
    held = await _held(channel, queue, 30)
    acks = AckCoalescing()
    underlay = await channel.get_underlay_channel()
    await asyncio.gather(*(acks.ack(underlay, m.delivery_tag) for m in held))
    assert ack_writes == [30]
    await acks.ack(underlay, (await _held(channel, queue, 1))[0].delivery_tag)  # one alone, at once
    assert ack_writes == [30, 1]
    # Settled: once the channel is gone, an unacked delivery would be back on the queue.
    await channel.close()
    other = await channel._connection.channel()
    assert (await other.declare_queue(queue.name, passive=True)).declaration_result.message_count == 0


async def test_a_closed_channel_refuses_the_ack(channel: Any, rabbit: Rabbit) -> None:  # noqa: F811
    queue = await channel.declare_queue(rabbit.prefix + "closed", exclusive=True)
    held = await _held(channel, queue, 1)
    underlay = await channel.get_underlay_channel()
    await underlay.close()
    with pytest.raises(aiormq.exceptions.ChannelInvalidStateError):
        await AckCoalescing().ack(underlay, held[0].delivery_tag)
