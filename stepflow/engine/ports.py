"""Ports: what the engine side expects of a broker, whichever one is plugged in.

`stepflow.adapters.amqp` (RabbitMQ) and `stepflow.adapters.memory` (in-process, embedded
mode) implement these; the backend and the worker SDK are written against them only.
Inbound bodies are bytes: decoding belongs to `stepflow.adapters.protocol`, shared by both.
Outbound, the backend hands over what the log says (stored `JobSubmitted` events, jobs to
stop) and each broker builds the wire message at its edge (`stepflow.adapters.orders`), so
nothing in the process reads back a message it encoded itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol
from uuid import UUID

import msgspec

from stepflow.engine import events as ev


class Delivery(Protocol):
    """One inbound message, held unacked until `ack`/`nack`/`quarantine` settles it."""

    @property
    def queue(self) -> str: ...  # the queue it came from: job_completed, job_queue_not_found, ...

    @property
    def body(self) -> bytes: ...

    @property
    def message_id(self) -> str | None: ...

    @property
    def headers(self) -> Mapping[str, Any]: ...

    @property
    def content_type(self) -> str | None: ...

    @property
    def redelivered(self) -> bool: ...


class Outgoing(Protocol):
    """A message to publish: the broker copies these fields onto the wire."""

    @property
    def routing_key(self) -> str: ...

    @property
    def body(self) -> bytes: ...

    @property
    def message_id(self) -> str: ...

    @property
    def headers(self) -> Mapping[str, Any]: ...

    @property
    def priority(self) -> int: ...

    @property
    def delay_s(self) -> float: ...


class StopJob(msgspec.Struct, frozen=True, kw_only=True):
    """A job a worker must stop (its workflow was stopped or deleted, or it timed out), with
    its wire id and the instance last heard working on it, when known: an original SDK worker
    stops whatever it runs when told to, so a stop may only go to the instance that holds it."""

    workflow_id: UUID
    job_id: str
    wire_id: int | None = None
    instance_id: str | None = None


class BackendBroker(Protocol):
    """The backend's side: job orders out, responses and unroutable orders in."""

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    @property
    def connected(self) -> bool:
        """Whether the broker can be reached now (readiness: `/readyz`), without I/O."""

    async def publish_orders(self, orders: Sequence[ev.JobSubmitted]) -> None:
        """Publish each stored order to `job_submit` (routing key: its job type); return only
        once the broker confirmed every one."""

    async def publish_stops(self, stops: Sequence[StopJob]) -> None:
        """Broadcast `stop_process` for each job on `direct_messaging`; return once confirmed."""

    async def publish_direct(self, message: Outgoing) -> None:
        """Publish an operator's order to `direct_messaging`, matched on the message's headers."""

    async def next_batch(self, max_size: int, max_wait_s: float,
                         in_hand: Callable[[], None] | None = None) -> Sequence[Delivery]:
        """Wait for at least one inbound message, then gather up to `max_size` of them, waiting
        up to `max_wait_s` for more. `in_hand` is called once the first is taken (the batch
        will come): the backend then holds the starts back for its commit."""

    async def ack(self, deliveries: Sequence[Delivery]) -> None: ...

    async def quarantine(self, rejects: Sequence[tuple[Delivery, str]]) -> None:
        """Keep messages we cannot use on the quarantine queue, each with its reason; ack them
        once the broker has confirmed every copy."""


class WorkerBroker(Protocol):
    """The worker's side: job orders of its types in, responses and announcements out."""

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    @property
    def connected(self) -> bool:
        """Whether the broker can be reached now, without I/O."""

    async def consume_orders(self, job_types: Sequence[str], prefetch: int) -> None:
        """Declare and bind the job-type queues and start delivering to `next_order`."""

    async def next_order(self) -> Delivery: ...

    async def consume_direct(self, instance_id: str, job_types: Sequence[str]) -> None:
        """Declare this instance's direct queue and start delivering to `next_direct`."""

    async def next_direct(self) -> Delivery: ...

    async def publish_response(self, message: Outgoing) -> None:
        """Publish to `job_response` (or `worker_response`); return once confirmed."""

    async def ack(self, delivery: Delivery) -> None: ...

    async def reject(self, delivery: Delivery, requeue: bool) -> None: ...

    async def pause_orders(self) -> None: ...

    async def resume_orders(self) -> None: ...
