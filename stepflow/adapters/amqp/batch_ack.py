"""Acks made in the same turn of the event loop, in one socket write.

A worker acks an order once its answer is confirmed. The broker confirms answers written
together with one confirm, so their acks are made together too. aiormq's `basic_ack` writes
each one alone: a turn of the event loop and a socket write for every ack. `AckCoalescing`
writes the acks of one turn as one write on each delivery's own channel, after the same check
`basic_ack` makes first (a closed channel refuses). A channel without the aiormq internals used
here (another aiormq) gets one `basic_ack` an ack.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiormq
from aiormq.abc import ChannelFrame
from pamqp import commands as spec

from stepflow.adapters.amqp.batch_publish import answer

_INTERNALS = ("write_queue", "number", "create_future", "is_closed")


class AckCoalescing:
    def __init__(self) -> None:
        self._pending: dict[int, tuple[Any, list[int], list[asyncio.Future[None]]]] = {}
        self._flushing: set[asyncio.Task[None]] = set()

    async def ack(self, channel: Any, delivery_tag: int) -> None:
        """Return once the ack is written; raise `ChannelInvalidStateError` if the channel is
        closed (the broker has requeued the delivery)."""
        if not all(hasattr(channel, name) for name in _INTERNALS):
            await channel.basic_ack(delivery_tag)
            return
        if channel.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self._pending:
            task = asyncio.create_task(self._flush())
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)
        _, tags, waiting = self._pending.setdefault(id(channel), (channel, [], []))
        tags.append(delivery_tag)
        waiting.append(done)
        await done

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # the rest of this turn's acks join
        pending, self._pending = self._pending, {}
        for channel, tags, waiting in pending.values():
            try:
                if channel.is_closed:
                    raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
                written: asyncio.Future[Any] = channel.create_future()
                await channel.write_queue.put(ChannelFrame.marshall(
                    channel_number=channel.number, frames=[spec.Basic.Ack(delivery_tag=tag) for tag in tags],
                    drain_future=written))
                await written
            except BaseException as error:
                answer(waiting, error)
                if not isinstance(error, Exception):
                    raise
                continue
            answer(waiting, None)
