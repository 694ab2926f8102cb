"""The RabbitMQ topology of the Step Flow protocol: every exchange and queue, by name.

`Topology(prefix)` names everything (the names of the original Step Flow, with an optional
prefix so two installations share one broker) and declares it. Declaring is idempotent and
cheap, so the backend and every worker declare the common part at start: whichever starts
first, nothing published is lost for want of a queue. Arguments must never differ between
two declarations of the same name (RabbitMQ refuses that with PRECONDITION_FAILED, and an
mcai worker that meets it hangs as a zombie), which is why they are only ever built here,
and why every name the original's worker SDK (mcai-worker-sdk 2.1.1) declares carries
exactly its arguments (docs/research/mcai-worker-sdk-2.1.1.md, section 2).

    job_submit            topic, AE job_queue_not_found                   backend -> workers
      <job type>          queue per type, key = type                      declared by workers
                          x-max-priority=100, DLX job_delayed, DL key = the queue (the SDK's)
    job_delayed           fanout -> queue, ttl 5 s, DLX ""                rejected orders, back later
    job_queue_not_found   fanout -> queue                                 orders no queue took
    job_response          topic, AE job_response_not_found
                          -> job_completed|job_progression|job_error|job_stopped|worker_discovery
    job_response_delayed  fanout -> queue, ttl 5 s, dead-letter to ""     redelivery later
    worker_response       topic, AE worker_response_not_found -> worker_discovery|worker_status
    direct_messaging      headers, AE direct_messaging_not_found -> direct_messaging_<instance>
    *_not_found           fanout AEs; job_response_not_found and worker_response_not_found
                          keep what nobody took in queues of the same name
    stepflow_job_submit_delayed  fanout -> queue, dead-letter to job_submit   delayed orders (ours)
    stepflow_quarantine   queue                                           malformed inbound (ours)

A job queue dead-letters to `job_delayed`, which sends the order back to its queue after 5 s:
that is the SDK's retry of an order it rejects. So nothing of stepflow's may reject an order
without requeue to get rid of it (it would loop); the worker broker copies such an order to
the quarantine and acks it instead.

Cluster mode (`Topology(prefix, quorum=True)`, the setting `amqp_server_configuration=cluster`,
the SDK's `AMQP_SERVER_CONFIGURATION=cluster`, research doc section 2.2): every durable queue is
declared `x-queue-type=quorum`, so a RabbitMQ cluster that loses a node loses no message, and
the job queues lose `x-max-priority` (quorum queues refuse it: the broker then ignores message
priorities), exactly as the SDK does in that mode. Checked on RabbitMQ 3.10.8: quorum queues
take `x-message-ttl`, the per-message `expiration` of `stepflow_job_submit_delayed` and
dead-lettering (at most once, the default strategy, as the SDK's), so every queue keeps its
job; they refuse `x-max-priority`, exclusive, auto-delete and non-durable queues, and global
QoS on a consuming channel. A queue that exists with the other type cannot be re-declared
(`inequivalent arg 'x-queue-type'`): switching an installation drains and deletes its queues,
or moves to a new vhost or prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue, ExchangeType
from aiormq import spec

from stepflow.adapters import protocol as p

PERSISTENT = 2  # delivery_mode

MAX_PRIORITY = 100  # x-max-priority of job-type queues, as the SDK declares them (the engine sends 0-9)
RESPONSE_DELAY_MS = 5_000  # job_response_delayed: the original waits 5 s before redelivery
JOB_DELAY_MS = 5_000  # job_delayed: the SDK's queue, x-message-ttl=5000


@dataclass(frozen=True)
class Declared:
    exchanges: dict[str, AbstractExchange]
    queues: dict[str, AbstractQueue]


@dataclass(frozen=True)
class Topology:
    prefix: str = ""
    quorum: bool = False  # cluster mode: quorum queues, as the SDK's AMQP_SERVER_CONFIGURATION=cluster

    def arguments(self, arguments: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """A durable queue's arguments in this mode: as given (standalone; RabbitMQ takes an
        absent `x-queue-type` for the SDK's explicit `classic`), or with `x-queue-type=quorum`."""
        return {**(arguments or {}), "x-queue-type": "quorum"} if self.quorum else arguments

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
    def job_delayed(self) -> str:
        return self.name(p.JOB_DELAYED)

    @property
    def job_response_not_found(self) -> str:
        return self.name(p.JOB_RESPONSE_NOT_FOUND)

    @property
    def worker_response_not_found(self) -> str:
        return self.name(p.WORKER_RESPONSE_NOT_FOUND)

    @property
    def direct_messaging_not_found(self) -> str:
        return self.name(p.DIRECT_MESSAGING_NOT_FOUND)

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
        return (self.job_submit, self.job_submit_delayed, self.job_queue_not_found, self.job_delayed,
                self.job_response, self.job_response_not_found, self.job_response_delayed,
                self.worker_response, self.worker_response_not_found, self.direct_messaging,
                self.direct_messaging_not_found)

    def queues(self) -> tuple[str, ...]:
        """Every queue the common part declares (job-type and direct queues not included)."""
        return (*self.backend_queues, self.job_submit_delayed, self.job_delayed, self.job_response_delayed,
                self.job_response_not_found, self.worker_response_not_found, self.quarantine)

    # --- declaration ---------------------------------------------------------------------

    async def declare(self, channel: AbstractChannel) -> Declared:
        """Declare every exchange and the queues the backend owns (a robust channel
        re-declares them after a reconnection). Alternate exchanges come before the
        exchanges that name them, so no message is ever routed to a missing one."""
        ex: dict[str, AbstractExchange] = {}
        qs: dict[str, AbstractQueue] = {}

        async def exchange(name: str, kind: ExchangeType, alternate: str | None = None) -> AbstractExchange:
            ex[name] = await channel.declare_exchange(
                name, kind, durable=True, arguments={"alternate-exchange": alternate} if alternate else None)
            return ex[name]

        async def queue(name: str, source: AbstractExchange, key: str,
                        arguments: dict[str, Any] | None = None) -> None:
            qs[name] = await self._queue(channel, name, source, key, arguments)

        for not_found in (self.job_queue_not_found, self.job_response_not_found,
                          self.worker_response_not_found, self.direct_messaging_not_found):
            await exchange(not_found, ExchangeType.FANOUT)
        # The SDK declares a queue worker_response_not_found without arguments; the other two
        # are ours to shape. Nothing is kept for direct orders no worker took (a stop for a
        # worker that is gone means nothing), and no queue may be bound to
        # direct_messaging_not_found: `stepflow worker-control` publishes mandatory and relies on
        # the return to say that no worker listens.
        for kept in (self.job_queue_not_found, self.job_response_not_found, self.worker_response_not_found):
            await queue(kept, ex[kept], "")
        await exchange(self.job_submit, ExchangeType.TOPIC, self.job_queue_not_found)
        await exchange(self.job_delayed, ExchangeType.FANOUT)
        # The SDK's delay: a rejected order waits 5 s, then goes back, through the default
        # exchange, to the queue named by its dead-letter routing key (its own queue).
        await queue(self.job_delayed, ex[self.job_delayed], "*",
                    {"x-message-ttl": JOB_DELAY_MS, "x-dead-letter-exchange": ""})
        await exchange(self.job_submit_delayed, ExchangeType.FANOUT)
        # Messages expire per message (`expiration`), then go to job_submit with their own
        # routing key (the job type), since no x-dead-letter-routing-key is set.
        await queue(self.job_submit_delayed, ex[self.job_submit_delayed], "",
                    {"x-dead-letter-exchange": self.job_submit})
        await exchange(self.job_response, ExchangeType.TOPIC, self.job_response_not_found)
        for key in p.RESPONSE_KEYS:
            await queue(self.name(key), ex[self.job_response], key)
        await exchange(self.job_response_delayed, ExchangeType.FANOUT)
        # Published with the origin queue's name as routing key; dead-lettered through the
        # default exchange, which routes by queue name: back to where it came from.
        await queue(self.job_response_delayed, ex[self.job_response_delayed], "",
                    {"x-message-ttl": RESPONSE_DELAY_MS, "x-dead-letter-exchange": ""})
        await exchange(self.worker_response, ExchangeType.TOPIC, self.worker_response_not_found)
        for key in p.WORKER_KEYS:
            await queue(self.name(key), ex[self.worker_response], key, self.worker_queue_arguments(key))
        # The SDK announces itself on job_response (key worker_discovery) and binds nothing.
        await qs[self.name(p.WORKER_DISCOVERY)].bind(ex[self.job_response], routing_key=p.WORKER_DISCOVERY)
        await exchange(self.direct_messaging, ExchangeType.HEADERS, self.direct_messaging_not_found)
        qs[self.quarantine] = await channel.declare_queue(self.quarantine, durable=True,
                                                          arguments=self.arguments())
        return Declared(ex, qs)

    def worker_queue_arguments(self, key: str) -> dict[str, Any] | None:
        """worker_discovery carries the SDK's dead-letter arguments (it declares that queue);
        the other worker queues are ours and have none."""
        if key != p.WORKER_DISCOVERY:
            return self.arguments()
        return self.arguments({"x-dead-letter-exchange": self.job_response_delayed,
                               "x-dead-letter-routing-key": self.name(p.WORKER_DISCOVERY)})

    async def _queue(self, channel: AbstractChannel, name: str, exchange: AbstractExchange, key: str,
                     arguments: dict[str, Any] | None = None) -> AbstractQueue:
        queue = await channel.declare_queue(name, durable=True, arguments=self.arguments(arguments))
        await queue.bind(exchange, routing_key=key)
        return queue

    async def declare_job_queue(self, channel: AbstractChannel, job_type: str) -> AbstractQueue:
        """A job type's queue, bound to job_submit with the type as key (workers call this)."""
        queue = await channel.declare_queue(self.job_queue(job_type), durable=True,
                                            arguments=self.job_queue_arguments(job_type))
        await queue.bind(self.job_submit, routing_key=job_type)
        return queue

    def job_queue_arguments(self, job_type: str) -> dict[str, Any]:
        """The SDK's, argument for argument: priorities up to 100 (standalone only: quorum
        queues have none), and a rejected order waits 5 s in job_delayed, then comes back to
        this queue (its real name)."""
        delayed = {"x-dead-letter-exchange": self.job_delayed, "x-dead-letter-routing-key": self.job_queue(job_type)}
        if self.quorum:
            return {**delayed, "x-queue-type": "quorum"}
        return {"x-max-priority": MAX_PRIORITY, **delayed}

    async def declare_direct_queue(self, channel: AbstractChannel, instance_id: str,
                                   job_types: list[str] | tuple[str, ...]) -> AbstractQueue:
        """One worker instance's queue: orders for it, for one of its job types, or for all.

        Exclusive and classic in both modes: its name is this instance's, so no one else
        declares it, and it goes with the connection (the SDK's cluster-mode quorum direct
        queue outlives a killed worker and piles up broadcasts). In a cluster it lives on the
        node this connection is on; if that node dies the connection dies with it, the worker
        reconnects to another node and declares it there again, and orders sent in between
        are lost (worker-control publishes mandatory and reports that no worker listens)."""
        queue = await channel.declare_queue(self.direct_queue(instance_id), durable=False, auto_delete=True,
                                            exclusive=True)
        await queue.bind(self.direct_messaging, arguments={"x-match": "all", "instance_id": instance_id})
        # as the original SDK binds it (the string "true"), and stepflow's own broadcast, which
        # reaches stepflow's workers only (a stop whose instance is not known yet)
        await queue.bind(self.direct_messaging, arguments={"x-match": "any", "broadcast": "true",
                                                           "stepflow_broadcast": "true"})
        for job_type in job_types:
            await queue.bind(self.direct_messaging, arguments={"x-match": "all", "job_type": job_type})
        return queue

    async def delete(self, channel: AbstractChannel, extra_queues: tuple[str, ...] = ()) -> None:
        """Remove what `declare` made (tests and uninstall; a deployment never calls this)."""
        for queue in (*self.queues(), *extra_queues):
            await channel.queue_delete(queue)
        for exchange in self.exchanges():
            await channel.exchange_delete(exchange)


@dataclass(frozen=True, slots=True)
class Outbound:
    """A message as it goes out: its body and its AMQP properties, built once (`persistent`,
    `kept_copy`) and published with `connection.publish`."""

    body: bytes
    properties: spec.Basic.Properties


def persistent(body: bytes, *, message_id: str, headers: dict[str, Any] | None = None, priority: int = 0,
               expiration_s: float | None = None) -> Outbound:
    """The one way stepflow builds an AMQP message: JSON, persistent, id and timestamp set.

    The properties are built directly, not through `aio_pika.Message`: the same frame on the
    wire (aio-pika sends priority 0 when none is set, and so do we), for a tenth of the CPU
    (3 us instead of 32: its constructor checks a lock on every attribute it sets), once for
    every order, answer and progress message."""
    return Outbound(body, spec.Basic.Properties(
        content_type=p.CONTENT_TYPE, delivery_mode=PERSISTENT, message_id=message_id, timestamp=datetime.now(UTC),
        headers=headers or {}, priority=priority,
        expiration=None if expiration_s is None else str(int(expiration_s * 1000)),
    ))


def kept_copy(body: bytes, *, message_id: str | None, content_type: str | None, headers: dict[str, Any]) -> Outbound:
    """A received message as it is kept aside (quarantine): its own body, id and content type."""
    return Outbound(body, spec.Basic.Properties(content_type=content_type, delivery_mode=PERSISTENT, message_id=message_id,
                                           headers=headers, priority=0))
