"""Queue depth for `/metrics`, read from a real RabbitMQ with passive declarations."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import amqp_fixtures
import pytest
from amqp_fixtures import Rabbit

from stepflow.adapters.amqp import AmqpBackendBroker
from stepflow.adapters.http.queues import Depth, QueueDepths

pytestmark = [pytest.mark.integration, pytest.mark.rabbitmq]
rabbit = amqp_fixtures.rabbit  # the fixture


def test_depth_of_declared_queues_by_protocol_name(rabbit: Rabbit) -> None:
    asyncio.run(rabbit.declare("media_probe"))
    asyncio.run(rabbit.publish("job_submit", "media_probe", b"{}"))
    backend = SimpleNamespace(broker=AmqpBackendBroker(rabbit.url, prefix=rabbit.prefix))  # never connected

    async def read() -> list[Depth]:
        depths = QueueDepths()
        try:
            first = await depths.read(backend, ["media_probe", "never_declared"])
            again = await depths.read(backend, ["media_probe"])  # the same connection, after a 404 closed a channel
            assert again == [d for d in first if d.queue in {q.queue for q in again}]
            return first
        finally:
            await depths.close()

    found = {d.queue: d for d in asyncio.run(read())}
    assert found["media_probe"] == Depth("media_probe", 1, 0)
    assert found["job_completed"] == Depth("job_completed", 0, 0)
    assert "never_declared" not in found
