"""A robust connection given several node URLs, on the real broker: a node that does not
answer is skipped at start, and after the broker closes the connection the client goes
round the list (through the dead node, one failed attempt) and reconnects, channels and
consumers restored."""

from __future__ import annotations

import asyncio
import socket
import uuid

import aio_pika
import amqp_fixtures
import pytest
from amqp_fixtures import AMQP_URL, close_connections, eventually

from stepflow.adapters.amqp.connection import ClusterConnection, connect, connect_once

pytestmark = [pytest.mark.integration, pytest.mark.rabbitmq]
rabbit = amqp_fixtures.rabbit


def dead_url() -> str:
    """A URL on a port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"amqp://guest:guest@127.0.0.1:{port}/"


async def test_the_first_node_that_answers_is_used(rabbit: amqp_fixtures.Rabbit) -> None:
    name = f"stepflow-test-{uuid.uuid4().hex[:8]}"
    connection = await connect(f"{dead_url()},{dead_url()} {AMQP_URL}", name, timeout=5)
    try:
        assert isinstance(connection, ClusterConnection) and connection.node == 2
    finally:
        await connection.close()
    plain = await connect_once(f"{dead_url()},{AMQP_URL}", name, timeout=5)
    await plain.close()


async def test_no_node_answers_raises_at_once() -> None:
    with pytest.raises(ConnectionError):
        await connect(f"{dead_url()},{dead_url()}", "stepflow-test-none", timeout=5)
    with pytest.raises(ConnectionError):
        await connect_once(dead_url(), "stepflow-test-none", timeout=5)


async def test_after_a_loss_the_client_tries_the_next_nodes_and_comes_back(rabbit: amqp_fixtures.Rabbit) -> None:
    name = f"stepflow-test-{uuid.uuid4().hex[:8]}"
    connection = await connect(f"{AMQP_URL},{dead_url()}", name, timeout=5, reconnect_interval=0.2)
    assert isinstance(connection, ClusterConnection)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{rabbit.prefix}urls", auto_delete=True)
        got: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_message(message: object) -> None:
            await got.put(message.body)  # type: ignore[attr-defined]

        await queue.consume(on_message, no_ack=True)
        assert await asyncio.to_thread(close_connections, name) == 1
        # the dead node is tried (and fails) before the live one is again
        await eventually(lambda: connection.reconnections == 1, 20, "the reconnection")
        assert connection.failed_attempts == 1 and connection.node == 0
        await rabbit.channel_do(lambda ch: ch.default_exchange.publish(
            aio_pika.Message(b"after"), routing_key=f"{rabbit.prefix}urls"))
        assert await asyncio.wait_for(got.get(), 10) == b"after"  # the consumer was restored
    finally:
        await connection.close()
