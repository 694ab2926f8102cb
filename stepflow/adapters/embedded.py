"""Embedded mode: backend, in-process broker and workers in one process, no server needed.

The same `Backend` and `Worker` code as a deployment runs here; only the broker differs
(`MemoryBroker`). `EmbeddedRuntime` is the Python API a service uses to embed the engine;
`stepflow run` and `stepflow serve --embedded` get theirs from `stepflow.bootstrap`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from stepflow.adapters.memory.broker import MemoryBackendBroker, MemoryBroker, MemoryWorkerBroker
from stepflow.adapters.read_side import ReadSide
from stepflow.adapters.runtime import Runtime, StateListener
from stepflow.engine.application import WorkflowEngine
from stepflow.sdk import Worker

__all__ = ["EmbeddedRuntime", "InProcessBrokers", "StateListener"]


class InProcessBrokers:
    """`Brokers` over one `MemoryBroker`: every side is ready as soon as it exists."""

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self.broker = broker or MemoryBroker()

    def backend(self) -> MemoryBackendBroker:
        return self.broker.backend()

    def worker(self, worker: Worker) -> MemoryWorkerBroker:
        return self.broker.worker()

    async def ready(self, tasks: Sequence[asyncio.Task[None]]) -> None:
        return None

    def close(self) -> None:
        self.broker.close()


class EmbeddedRuntime(Runtime):
    """Start with `async with EmbeddedRuntime(engine, workers) as runtime:`."""

    def __init__(self, engine: WorkflowEngine, workers: Sequence[Worker] = (), *, projections: bool = False,
                 **backend_options: Any) -> None:
        """`projections=True` keeps the read models (and the workers view) up to date here."""
        brokers = InProcessBrokers()
        self.broker = brokers.broker
        super().__init__(engine, workers, brokers, read_side=ReadSide(engine) if projections else None,
                         **backend_options)
