"""`AmqpRuntime`: the embedded runtime's interface, over a real RabbitMQ.

The backend runs in this process (like `stepflow serve`), and so do the given workers, each
on its own connection as if it were a process of its own. `stepflow run --amqp-url` uses it;
a service can too. Opening waits until every worker has declared its queues, so the first
orders find them (an order for a type no queue was ever declared for is unroutable).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from stepflow.adapters.amqp.backend_broker import AmqpBackendBroker
from stepflow.adapters.amqp.worker_broker import AmqpWorkerBroker
from stepflow.adapters.read_side import ReadSide
from stepflow.adapters.runtime import Runtime
from stepflow.engine.application import WorkflowEngine
from stepflow.sdk import Worker

READY_TIMEOUT_S = 30.0


class AmqpBrokers:
    """`Brokers` over RabbitMQ: a connection for the backend, one per worker."""

    def __init__(self, url: str | None = None, *, prefix: str = "", prefetch: int = 512,
                 quorum: bool | None = None) -> None:
        self.url = url
        self.prefix = prefix
        self.prefetch = prefetch
        self.quorum = quorum  # cluster mode: quorum queues (`Topology.quorum`); None: the environment's
        self._workers: list[AmqpWorkerBroker] = []

    def backend(self) -> AmqpBackendBroker:
        return AmqpBackendBroker(self.url, prefix=self.prefix, prefetch=self.prefetch, quorum=self.quorum)

    def worker(self, worker: Worker) -> AmqpWorkerBroker:
        broker = AmqpWorkerBroker(self.url, prefix=self.prefix, quorum=self.quorum,
                                  connection_name=f"stepflow-worker[{self.prefix}]{worker.instance_id}")
        self._workers.append(broker)
        return broker

    async def ready(self, tasks: Sequence[asyncio.Task[None]]) -> None:
        """Each worker's queues consumed, or raise what stopped a worker before."""

        async def all_ready() -> None:
            for broker, task in zip(self._workers, tasks, strict=True):
                ready = asyncio.create_task(broker.ready.wait())
                await asyncio.wait([ready, task], return_when=asyncio.FIRST_COMPLETED)
                ready.cancel()
                if task.done():
                    task.result()  # raises what stopped the worker (e.g. broker unreachable)
                    raise RuntimeError("a worker stopped before it was ready")

        await asyncio.wait_for(all_ready(), READY_TIMEOUT_S)

    def close(self) -> None:
        return None  # each connection is closed by its owner: the backend, a worker


class AmqpRuntime(Runtime):
    """Start with `async with AmqpRuntime(engine, workers, url=..., prefix=...) as runtime:`."""

    def __init__(self, engine: WorkflowEngine, workers: Sequence[Worker] = (), *, url: str | None = None,
                 prefix: str = "", prefetch: int = 512, projections: bool = False, quorum: bool | None = None,
                 **backend_options: Any) -> None:
        """`prefetch`: unacked responses the backend holds; `projections=True` keeps the views here;
        `quorum=True`: cluster mode, quorum queues (`Topology.quorum`; None: as
        `AMQP_SERVER_CONFIGURATION` or `STEPFLOW_AMQP_SERVER_CONFIGURATION` say)."""
        super().__init__(engine, workers, AmqpBrokers(url, prefix=prefix, prefetch=prefetch, quorum=quorum),
                         read_side=ReadSide(engine) if projections else None, **backend_options)
        self.url = url
        self.prefix = prefix
