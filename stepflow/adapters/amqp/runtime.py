"""`AmqpRuntime`: the embedded runtime's interface, over a real RabbitMQ.

The backend runs in this process (like `stepflow serve`), and so do the given workers, each
on its own connection as if it were a process of its own. `stepflow run --amqp-url` uses it;
a service can too. Entering waits until every worker has declared its queues, so the first
orders find them (an order for a type no queue was ever declared for is unroutable).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Self

from stepflow.adapters.amqp.backend_broker import AmqpBackendBroker
from stepflow.adapters.amqp.worker_broker import AmqpWorkerBroker
from stepflow.adapters.backend import default_backend
from stepflow.adapters.embedded import EmbeddedRuntime
from stepflow.adapters.worker import Worker
from stepflow.engine.application import WorkflowEngine

READY_TIMEOUT_S = 30.0


class AmqpRuntime(EmbeddedRuntime):
    """Start with `async with AmqpRuntime(engine, workers, url=..., prefix=...) as runtime:`."""

    def __init__(self, engine: WorkflowEngine, workers: Sequence[Worker] = (), *, url: str | None = None,
                 prefix: str = "", **backend_options: Any) -> None:
        # Not EmbeddedRuntime.__init__: no in-process broker here.
        self.engine = engine
        self.url = url
        self.prefix = prefix
        self.backend = default_backend(engine, AmqpBackendBroker(url, prefix=prefix), **backend_options)
        self.workers = list(workers)
        self._worker_tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    async def __aenter__(self) -> Self:
        await self.backend.start()
        brokers = []
        try:
            for worker in self.workers:
                broker = AmqpWorkerBroker(self.url, prefix=self.prefix,
                                          connection_name=f"stepflow-worker[{self.prefix}]{worker.instance_id}")
                brokers.append(broker)
                self._worker_tasks.append(asyncio.create_task(worker.run(broker, stop=self._stop)))
            await self._ready(brokers)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def _ready(self, brokers: list[AmqpWorkerBroker]) -> None:
        async def all_ready() -> None:
            for broker, task in zip(brokers, self._worker_tasks, strict=True):
                ready = asyncio.create_task(broker.ready.wait())
                await asyncio.wait([ready, task], return_when=asyncio.FIRST_COMPLETED)
                ready.cancel()
                if task.done():
                    task.result()  # raises what stopped the worker (e.g. broker unreachable)
                    raise RuntimeError("a worker stopped before it was ready")

        await asyncio.wait_for(all_ready(), READY_TIMEOUT_S)

    async def __aexit__(self, *exc: object) -> None:
        await self._stop_workers_and_backend()  # no in-process broker or read side to close
