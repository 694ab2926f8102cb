"""What the backend's and the worker's brokers share: connecting, deliveries, safe publishing.

- `connect`: a robust connection (aio-pika reconnects and re-declares what was declared
  on it, consumers included), named so `rabbitmqctl list_connections` shows who is who.
  The URL setting may name several nodes of one RabbitMQ cluster (`urls`: separated by
  whitespace, or commas before the next URL's scheme): the connection goes to the first node that answers, and every
  reconnection tries the next node, round robin (`ClusterConnection`), so a client whose
  node stopped carries on with a surviving one. aio-pika's `connect_robust` takes one URL.
- `AmqpDelivery`: an inbound message as the ports see it. It remembers the channel it came
  on: a delivery tag is only valid on that channel, so after a reconnection an old delivery
  is never acked on the new channel (RabbitMQ would close it for an unknown tag); the broker
  has already requeued it, and the redelivery is recognised by its message id.
- `publish_confirmed`: publish, wait for the broker's confirm, and retry through a
  reconnection. At least once: a retry after a lost confirm may duplicate, which every
  consumer of the protocol tolerates (ids are stable).
- Bytes that are not UTF-8 in a message's short strings (message id, content type, ...)
  or header names: RabbitMQ passes them on, and pamqp's strict decoding of them made the
  frame unreadable, so aiormq closed the connection; the message was redelivered and did it
  again, forever, so one message stopped a worker or the backend. They are decoded with
  U+FFFD replacements instead (see `tolerate_invalid_utf8`), and the message is read, then
  refused or answered like any other bad message.
"""

from __future__ import annotations

import asyncio
import os
import re
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlparse

import aio_pika
import aiormq
import structlog
from aio_pika.abc import (
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)
from aio_pika.robust_connection import RobustConnection
from yarl import URL

from stepflow.adapters.amqp.topology import Outbound

log = structlog.get_logger("stepflow.amqp")

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
RETRY_MAX_S = 5.0

# What a lost connection or channel looks like to a caller; worth retrying.
TRANSIENT: tuple[type[BaseException], ...] = (
    ConnectionError,
    asyncio.TimeoutError,
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ChannelClosed,
    aio_pika.exceptions.ChannelInvalidStateError,
    aio_pika.exceptions.DeliveryError,
)


def tolerate_invalid_utf8() -> None:
    """Make pamqp decode short strings and field-table keys that are not valid UTF-8 with
    replacement characters instead of raising (which kills the whole connection). Long
    strings already come back as bytes when not UTF-8. Idempotent; process-wide."""
    from pamqp import common, decode

    if getattr(decode, "_stepflow_tolerant", False):
        return

    def short_str(value: bytes) -> tuple[int, str]:
        try:
            length = common.Struct.byte.unpack(value[0:1])[0]
        except (struct.error, TypeError) as err:
            raise ValueError("Could not unpack short string value") from err
        return length + 1, value[1:length + 1].decode("utf-8", "replace")

    def field_table(value: bytes) -> tuple[int, dict[str, Any]]:  # pamqp's, keys decoded tolerantly
        try:
            length = common.Struct.integer.unpack(value[0:4])[0]
            offset, data, end = 4, {}, 4 + length
            if end > len(value):
                raise ValueError("Field table length exceeds available data")
            while offset < end:
                key_length = common.Struct.byte.unpack_from(value, offset)[0]
                offset += 1
                if offset + key_length > end:
                    raise ValueError("Field table key length exceeds data")
                key = value[offset:offset + key_length].decode("utf-8", "replace")
                offset += key_length
                consumed, result = decode.embedded_value(value[offset:])
                offset += consumed
                data[key] = result
            return end, data
        except (struct.error, TypeError) as err:
            raise ValueError("Could not unpack data") from err

    decode.METHODS["shortstr"] = short_str
    decode.METHODS["table"] = field_table
    decode.TABLE_MAPPING[b"F"] = field_table
    decode._stepflow_tolerant = True  # type: ignore[attr-defined]


tolerate_invalid_utf8()


def amqp_url(explicit: str | None = None) -> str:
    return explicit or os.environ.get("STEPFLOW_AMQP_URL") or DEFAULT_URL


# Between two node URLs: whitespace (never part of a URL), or a comma before the next URL's
# scheme (a comma may be part of a password). `stepflow.settings` validates with the same rule.
URL_SEPARATORS = " \t\r\n,"
NEXT_URL = re.compile(r"[\s,]*,[\s,]*(?=[a-z][a-z0-9+.-]*://)|\s+", re.IGNORECASE)


def urls(amqp_url: str) -> list[str]:
    """The node URLs of the `amqp_url` setting: one URL, or several nodes of one cluster,
    separated by whitespace or by commas (each URL with its scheme), in the given order."""
    found = [url for url in NEXT_URL.split(amqp_url.strip(URL_SEPARATORS)) if url]
    if not found:
        raise ValueError("no RabbitMQ URL given")
    return found


def mask_url(url: str) -> str:
    """The URL (or each of several) with its password replaced, fit for a log line or an error message."""
    nodes = urls(url) if url.strip(URL_SEPARATORS) else [url]
    return ",".join(mask_one_url(one) for one in nodes)


def mask_one_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password:
        return parsed._replace(netloc=parsed.netloc.replace(f":{parsed.password}@", ":***@")).geturl()
    return url


class ClusterConnection(RobustConnection):
    """aio-pika's robust connection, over the nodes of a cluster: after every close (a lost
    connection or a failed attempt; aio-pika calls `_on_connection_close` for both) the
    next attempt goes to the next node. A loss is retried at once on the next node; a
    failed attempt after `reconnect_interval`, so a dead node costs one interval at most.
    Channels, exchanges, queues and consumers are restored by aio-pika as for one node.

    Counts reconnections and logs each with how long the client was away (`down_s`): the
    proof, in a test or in production, that a node's loss was survived and where to."""

    def __init__(self, node_urls: Sequence[str], start: int = 0, **kwargs: Any) -> None:
        self.node_urls = [URL(url) for url in node_urls]
        self.node = start % len(self.node_urls)
        super().__init__(self.node_urls[self.node], **kwargs)
        self.connection_name = str((kwargs.get("client_properties") or {}).get("connection_name", ""))
        self.reconnections = 0
        self.failed_attempts = 0
        self._lost_at: float | None = None

    def _next_node(self) -> None:
        self.node = (self.node + 1) % len(self.node_urls)
        self.url = self.node_urls[self.node]

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        if not (self.close_called or self.is_closed):
            failed = mask_url(str(self))
            self._next_node()
            if not self.connection_attempt:
                pass  # the first connection failed: `connect` tries the next node itself
            elif self._lost_at is None:
                self._lost_at = time.monotonic()
                log.warning("amqp_connection_lost", url=failed, connection=self.connection_name,
                            error=_closing_error(closing), next=mask_url(str(self)))
            else:  # aio-pika logs the failed attempt itself
                self.failed_attempts += 1
                log.debug("amqp_reconnecting", failed=failed, next=mask_url(str(self)),
                          connection=self.connection_name)
        await super()._on_connection_close(closing)

    async def _on_connected(self) -> None:
        await super()._on_connected()
        if self._lost_at is not None:
            self.reconnections += 1
            log.warning("amqp_reconnected", url=mask_url(str(self)), connection=self.connection_name,
                        down_s=round(time.monotonic() - self._lost_at, 3), reconnections=self.reconnections)
            self._lost_at = None


def _closing_error(closing: asyncio.Future[Any]) -> str:
    if closing.cancelled():
        return "cancelled"
    error = closing.exception()
    return repr(error)[:300] if error is not None else ""


async def connect(url: str, name: str, *, timeout: float = 10.0, reconnect_interval: float = 1.0
                  ) -> AbstractRobustConnection:
    """Connect to the first node of `url` that answers (raising if none can be reached),
    then reconnect forever, to any of them."""
    nodes = urls(url)
    last: BaseException | None = None
    for start, node_url in enumerate(nodes):
        connection = ClusterConnection(nodes, start, client_properties={"connection_name": name},
                                       reconnect_interval=reconnect_interval, fail_fast=True)
        try:
            await connection.connect(timeout=timeout)
        except aio_pika.exceptions.CONNECTION_EXCEPTIONS as error:
            last = error
            await connection.close()
            if len(nodes) > 1:
                log.warning("amqp_node_unreachable", url=mask_url(node_url), connection=name, error=repr(error))
            continue
        log.info("amqp_connected", url=mask_url(node_url), connection=name, nodes=len(nodes))
        return connection
    assert last is not None
    raise last


async def connect_once(url: str, name: str, *, timeout: float = 10.0) -> AbstractConnection:
    """A plain (not robust) connection to the first node of `url` that answers: for a
    probe or a one-off command. Raises the last node's error if none answers."""
    last: BaseException | None = None
    for node_url in urls(url):
        try:
            return await aio_pika.connect(node_url, timeout=timeout, client_properties={"connection_name": name})
        except aio_pika.exceptions.CONNECTION_EXCEPTIONS as error:
            last = error
    assert last is not None
    raise last


@dataclass(frozen=True, eq=False)
class AmqpDelivery:
    """Implements `stepflow.engine.ports.Delivery` for a message from RabbitMQ."""

    queue: str  # the protocol name (prefix removed): job_completed, <job type>, ...
    body: bytes
    message_id: str | None
    headers: Mapping[str, Any]
    content_type: str | None
    redelivered: bool
    routing_key: str
    delivery_tag: int
    channel: aiormq.abc.AbstractChannel = field(repr=False)
    real_queue: str = ""

    @classmethod
    def of(cls, message: AbstractIncomingMessage, queue: str, real_queue: str) -> AmqpDelivery:
        """From aio-pika's message (a consumer aio-pika restored: see `consumers`)."""
        return cls(
            queue=queue, body=message.body, message_id=message.message_id, headers=_headers(message.headers),
            content_type=message.content_type, redelivered=bool(message.redelivered),
            routing_key=message.routing_key or "", delivery_tag=message.delivery_tag or 0,
            channel=message.channel, real_queue=real_queue,
        )

    @classmethod
    def delivered(cls, message: aiormq.abc.DeliveredMessage, queue: str, real_queue: str) -> AmqpDelivery:
        """From aiormq's delivery, as it came off the channel (see `consumers`)."""
        properties = message.header.properties
        deliver = message.delivery
        assert isinstance(deliver, aiormq.spec.Basic.Deliver), deliver  # a consumer's, not a get's or a return's
        return cls(
            queue=queue, body=message.body, message_id=properties.message_id, headers=_headers(properties.headers),
            content_type=properties.content_type, redelivered=bool(deliver.redelivered),
            routing_key=deliver.routing_key or "", delivery_tag=deliver.delivery_tag or 0,
            channel=message.channel, real_queue=real_queue,
        )

    @property
    def stale(self) -> bool:
        """Its channel is gone: the broker requeued it; settling it is neither needed nor possible."""
        return self.channel.is_closed


def _headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: (v.decode("utf-8", "replace") if isinstance(v, bytes) else v) for k, v in (headers or {}).items()}


def robust_channel(exchange: AbstractExchange) -> aio_pika.Channel:
    """The exchange's channel (every exchange is aio-pika's; the abstract one does not say so)."""
    return cast(aio_pika.Channel, cast(aio_pika.Exchange, exchange).channel)


async def underlay_channel(exchange: AbstractExchange) -> aiormq.abc.AbstractChannel:
    """The robust channel's current aiormq channel, as `Exchange.publish` takes it: a closed
    channel is refused."""
    robust = robust_channel(exchange)
    if robust.is_closed:
        raise aiormq.exceptions.ChannelInvalidStateError(f"{robust!r} closed")
    return await robust.get_underlay_channel()


async def publish(exchange: AbstractExchange, message: Outbound, routing_key: str, *, mandatory: bool = True) -> Any:
    """aio-pika's `Exchange.publish`, step for step (a closed channel refused, the robust
    channel's current one, `basic_publish` with confirms), for a message whose properties are
    built already (`topology.Outbound`): the broker's confirm, or the returned message when
    nothing took it."""
    channel = await underlay_channel(exchange)
    return await channel.basic_publish(message.body, exchange=exchange.name, routing_key=routing_key,
                                       properties=message.properties, mandatory=mandatory)


async def publish_confirmed(exchange: AbstractExchange, message: Outbound, routing_key: str, *, what: str) -> None:
    """Publish and return once confirmed; retry (with backoff) while the broker is away."""
    delay = 0.1
    while True:
        try:
            await publish(exchange, message, routing_key)
            return
        except TRANSIENT as error:
            log.warning("amqp_publish_retry", what=what, routing_key=routing_key, error=repr(error),
                        retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)


async def settle(delivery: AmqpDelivery, *, ack: bool, requeue: bool = False, multiple: bool = False) -> bool:
    """Ack or reject on the delivery's own channel; False if that channel is gone (requeued)."""
    if delivery.stale:
        return False
    try:
        if ack:
            await delivery.channel.basic_ack(delivery.delivery_tag, multiple=multiple)
        else:
            await delivery.channel.basic_reject(delivery.delivery_tag, requeue=requeue)
    except TRANSIENT as error:
        log.info("amqp_settle_lost", queue=delivery.queue, message_id=delivery.message_id, error=repr(error))
        return False
    return True
