"""The RabbitMQ topology of the Step Flow protocol: every exchange and queue, by name.

`Topology(prefix)` names everything (the names of the original Step Flow, with an optional
prefix so two installations share one broker) and declares it. Declaring is idempotent and
cheap, so the backend and every worker declare the common part at start: whichever starts
first, nothing published is lost for want of a queue. Arguments must never differ between
two declarations of the same name (RabbitMQ refuses that with PRECONDITION_FAILED), which
is why they are only ever built here.

    job_submit            topic, alternate-exchange=job_queue_not_found   backend -> workers
      <job type>          queue per type, x-max-priority, key = type      declared by workers
                          (a rejected order is dead-lettered to the quarantine)
    job_submit_delayed    fanout -> queue, dead-letter to job_submit      delayed orders
    job_queue_not_found   fanout -> queue                                 orders no queue took
    job_response          topic -> job_completed|job_progression|job_error|job_stopped
    job_response_delayed  fanout -> queue, ttl 5 s, dead-letter to ""     redelivery later
    worker_response       topic -> worker_discovery|worker_status
    direct_messaging      headers -> direct_messaging_<instance>          backend -> worker(s)
    stepflow_quarantine   queue                                           malformed inbound
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue, ExchangeType

from stepflow.adapters import protocol as p

MAX_PRIORITY = 10  # x-max-priority of job-type queues; the engine caps priorities below it
RESPONSE_DELAY_MS = 5_000  # job_response_delayed: the original waits 5 s before redelivery


@dataclass(frozen=True)
class Declared:
    exchanges: dict[str, AbstractExchange]
    queues: dict[str, AbstractQueue]


@dataclass(frozen=True)
class Topology:
    prefix: str = ""

    def name(self, base: str) -> str:
        return f"{self.prefix}{base}"

    def logical(self, name: str) -> str:
        """A queue's protocol name (what `Delivery.queue` reports): the prefix removed."""
        return name[len(self.prefix):] if self.prefix and name.startswith(self.prefix) else name

    # --- names ---------------------------------------------------------------------------

    @property
    def job_submit(self) -> str:
        return self.name(p.JOB_SUBMIT)

    @property
    def job_submit_delayed(self) -> str:
        return self.name(p.JOB_SUBMIT_DELAYED)

    @property
    def job_queue_not_found(self) -> str:
        return self.name(p.JOB_QUEUE_NOT_FOUND)

    @property
    def job_response(self) -> str:
        return self.name(p.JOB_RESPONSE)

    @property
    def job_response_delayed(self) -> str:
        return self.name(p.JOB_RESPONSE_DELAYED)

    @property
    def worker_response(self) -> str:
        return self.name(p.WORKER_RESPONSE)

    @property
    def direct_messaging(self) -> str:
        return self.name(p.DIRECT_MESSAGING)

    @property
    def quarantine(self) -> str:
        return self.name(p.QUARANTINE)

    def job_queue(self, job_type: str) -> str:
        """The queue of one job type: the type itself, as in the original."""
        return self.name(job_type)

    def direct_queue(self, instance_id: str) -> str:
        return self.name(f"{p.DIRECT_MESSAGING}_{instance_id}")

    def response_exchange(self, routing_key: str) -> str:
        """Where a worker publishes a message of this routing key."""
        return self.worker_response if routing_key in p.WORKER_KEYS else self.job_response

    @property
    def backend_queues(self) -> tuple[str, ...]:
        """The queues the backend consumes (real names)."""
        return tuple(self.name(q) for q in (*p.RESPONSE_KEYS, p.JOB_QUEUE_NOT_FOUND, *p.WORKER_KEYS))

    def exchanges(self) -> tuple[str, ...]:
        return (self.job_submit, self.job_submit_delayed, self.job_queue_not_found, self.job_response,
                self.job_response_delayed, self.worker_response, self.direct_messaging)

    def queues(self) -> tuple[str, ...]:
        """Every queue the common part declares (job-type and direct queues not included)."""
        return (*self.backend_queues, self.job_submit_delayed, self.job_response_delayed, self.quarantine)

    # --- declaration ---------------------------------------------------------------------

    async def declare(self, channel: AbstractChannel) -> Declared:
        """Declare every exchange and the queues the backend owns (a robust channel
        re-declares them after a reconnection)."""
        ex: dict[str, AbstractExchange] = {}
        qs: dict[str, AbstractQueue] = {}
        ex[self.job_queue_not_found] = await channel.declare_exchange(
            self.job_queue_not_found, ExchangeType.FANOUT, durable=True)
        qs[self.job_queue_not_found] = await self._queue(channel, self.job_queue_not_found,
                                                         ex[self.job_queue_not_found], "")
        ex[self.job_submit] = await channel.declare_exchange(
            self.job_submit, ExchangeType.TOPIC, durable=True,
            arguments={"alternate-exchange": self.job_queue_not_found})
        ex[self.job_submit_delayed] = await channel.declare_exchange(
            self.job_submit_delayed, ExchangeType.FANOUT, durable=True)
        # Messages expire per message (`expiration`), then go to job_submit with their own
        # routing key (the job type), since no x-dead-letter-routing-key is set.
        qs[self.job_submit_delayed] = await self._queue(
            channel, self.job_submit_delayed, ex[self.job_submit_delayed], "",
            {"x-dead-letter-exchange": self.job_submit})
        ex[self.job_response] = await channel.declare_exchange(
            self.job_response, ExchangeType.TOPIC, durable=True)
        for key in p.RESPONSE_KEYS:
            qs[self.name(key)] = await self._queue(channel, self.name(key), ex[self.job_response], key)
        ex[self.job_response_delayed] = await channel.declare_exchange(
            self.job_response_delayed, ExchangeType.FANOUT, durable=True)
        # Published with the origin queue's name as routing key; dead-lettered through the
        # default exchange, which routes by queue name: back to where it came from.
        qs[self.job_response_delayed] = await self._queue(
            channel, self.job_response_delayed, ex[self.job_response_delayed], "",
            {"x-message-ttl": RESPONSE_DELAY_MS, "x-dead-letter-exchange": ""})
        ex[self.worker_response] = await channel.declare_exchange(
            self.worker_response, ExchangeType.TOPIC, durable=True)
        for key in p.WORKER_KEYS:
            qs[self.name(key)] = await self._queue(channel, self.name(key), ex[self.worker_response], key)
        ex[self.direct_messaging] = await channel.declare_exchange(
            self.direct_messaging, ExchangeType.HEADERS, durable=True)
        qs[self.quarantine] = await channel.declare_queue(self.quarantine, durable=True)
        return Declared(ex, qs)

    @staticmethod
    async def _queue(channel: AbstractChannel, name: str, exchange: AbstractExchange, key: str,
                     arguments: dict[str, Any] | None = None) -> AbstractQueue:
        queue = await channel.declare_queue(name, durable=True, arguments=arguments)
        await queue.bind(exchange, routing_key=key)
        return queue

    async def declare_job_queue(self, channel: AbstractChannel, job_type: str) -> AbstractQueue:
        """A job type's queue, bound to job_submit with the type as key (workers call this)."""
        queue = await channel.declare_queue(self.job_queue(job_type), durable=True,
                                            arguments=self.job_queue_arguments())
        await queue.bind(self.job_submit, routing_key=job_type)
        return queue

    def job_queue_arguments(self) -> dict[str, Any]:
        """Priorities; an order a worker rejects as malformed is dead-lettered to quarantine."""
        return {"x-max-priority": MAX_PRIORITY, "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": self.quarantine}

    async def declare_direct_queue(self, channel: AbstractChannel, instance_id: str,
                                   job_types: list[str] | tuple[str, ...]) -> AbstractQueue:
        """One worker instance's queue: orders for it, for one of its job types, or for all."""
        queue = await channel.declare_queue(self.direct_queue(instance_id), durable=False, auto_delete=True,
                                            exclusive=True)
        await queue.bind(self.direct_messaging, arguments={"x-match": "all", "instance_id": instance_id})
        await queue.bind(self.direct_messaging, arguments={"x-match": "all", "broadcast": True})
        for job_type in job_types:
            await queue.bind(self.direct_messaging, arguments={"x-match": "all", "job_type": job_type})
        return queue

    async def delete(self, channel: AbstractChannel, extra_queues: tuple[str, ...] = ()) -> None:
        """Remove what `declare` made (tests and uninstall; a deployment never calls this)."""
        for queue in (*self.queues(), *extra_queues):
            await channel.queue_delete(queue)
        for exchange in self.exchanges():
            await channel.exchange_delete(exchange)


def persistent(body: bytes, *, message_id: str, headers: dict[str, Any] | None = None, priority: int = 0,
               expiration_s: float | None = None) -> aio_pika.Message:
    """The one way stepflow builds an AMQP message: JSON, persistent, id and timestamp set."""
    from datetime import datetime

    return aio_pika.Message(
        body,
        message_id=message_id,
        content_type=p.CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        timestamp=datetime.now(UTC),
        headers=headers or {},
        priority=priority or None,
        expiration=expiration_s,
    )
