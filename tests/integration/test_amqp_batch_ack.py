"""`batch_ack`: the acks of one turn of the event loop in one write, on a real RabbitMQ."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aiormq
import pytest
from aiormq.abc import ChannelFrame
from pamqp import commands as spec

from stepflow.adapters.amqp.batch_ack import AckCoalescing
from stepflow.adapters.amqp.connection import connect
from tests.amqp_fixtures import Rabbit, rabbit  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.rabbitmq]


@pytest.fixture
async def channel(rabbit: Rabbit) -> AsyncIterator[Any]:  # noqa: F811
    connection = await connect(rabbit.url, "test-batch-ack")
    try:
        yield await connection.channel(publisher_confirms=True)
    finally:
        await connection.close()


@pytest.fixture
def ack_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many acks each frame write carried."""
    counts: list[int] = []
    marshall = ChannelFrame.marshall

    def counted(channel_number: int, frames: Any, drain_future: Any = None) -> ChannelFrame:
        frames = list(frames)
        acks = sum(isinstance(f, spec.Basic.Ack) for f in frames)
        if acks:
            counts.append(acks)
        return marshall(channel_number=channel_number, frames=frames, drain_future=drain_future)

    monkeypatch.setattr(ChannelFrame, "marshall", staticmethod(counted))
    return counts


def channel_connection(channel: Any) -> Any:
    return channel._connection


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
    other = await channel_connection(channel).channel()
    assert (await other.declare_queue(queue.name, passive=True)).declaration_result.message_count == 0


async def test_a_closed_channel_refuses_the_ack(channel: Any, rabbit: Rabbit) -> None:  # noqa: F811
    queue = await channel.declare_queue(rabbit.prefix + "closed", exclusive=True)
    held = await _held(channel, queue, 1)
    underlay = await channel.get_underlay_channel()
    await underlay.close()
    with pytest.raises(aiormq.exceptions.ChannelInvalidStateError):
        await AckCoalescing().ack(underlay, held[0].delivery_tag)
