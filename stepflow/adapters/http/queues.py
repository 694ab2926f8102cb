"""Queue depth for `/metrics`: the messages waiting in each queue, read from the broker.

RabbitMQ: a passive `queue.declare` of each queue (the backend's queues, the quarantine and
one per job type the views know) on a connection of our own, opened at the first scrape
and kept; it answers the ready messages and the consumers. A queue not declared yet is left
out. The connection's URL and prefix are the backend's broker's (`url`, `topology`).

In-process broker (embedded mode): its queues are Python objects in this process, so the
depth is read from them directly (ready messages, held ones not counted, as RabbitMQ's
`messages_ready`); consumers are not counted there. Without a backend in the process there
is no broker to ask, and no queue metric.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any, NamedTuple

import structlog

log = structlog.get_logger("stepflow.http")
TIMEOUT_S = 2.0


class Depth(NamedTuple):
    queue: str  # the protocol name (prefix removed)
    messages: int
    consumers: int | None  # None: the broker cannot tell (in-process)


class QueueDepths:
    def __init__(self) -> None:
        self._connection: Any = None
        self._channel: Any = None

    async def read(self, backend: Any, job_types: Iterable[str]) -> list[Depth]:
        """The depth of every queue worth watching; [] when there is no broker to ask."""
        broker = getattr(backend, "broker", None)
        memory = getattr(broker, "broker", None)  # MemoryBackendBroker -> its MemoryBroker
        if memory is not None and isinstance(getattr(memory, "queues", None), dict):
            return [Depth(name, len(queue), None) for name, queue in sorted(memory.queues.items())]
        url, topology = getattr(broker, "url", None), getattr(broker, "topology", None)
        if url is None or topology is None:
            return []
        names = [*topology.queues(), *(topology.job_queue(t) for t in sorted(set(job_types)))]
        try:
            return await asyncio.wait_for(self._amqp(url, topology, names), TIMEOUT_S)
        except Exception as error:  # noqa: BLE001  a scrape never fails for want of a broker
            log.warning("queue_depth_unreadable", error=repr(error)[:200])
            await self.close()
            return []

    async def _amqp(self, url: str, topology: Any, names: list[str]) -> list[Depth]:
        import aio_pika

        from stepflow.adapters.amqp.connection import connect_once

        if self._connection is None or self._connection.is_closed:
            self._connection = await connect_once(url, f"stepflow-metrics[{topology.prefix}]", timeout=TIMEOUT_S)
            self._channel = None
        out = []
        for name in names:
            if self._channel is None or self._channel.is_closed:
                self._channel = await self._connection.channel(publisher_confirms=False)
            try:
                declared = await self._channel.declare_queue(name, passive=True)
            except aio_pika.exceptions.ChannelNotFoundEntity:
                continue  # not declared yet (a job type no worker has started for); the channel closed
            ok = declared.declaration_result
            out.append(Depth(topology.logical(name), ok.message_count, ok.consumer_count))
        return out

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        self._connection = self._channel = None
