"""Embedded mode: backend, in-process broker and workers in one process, no server needed.

The same `Backend` and `Worker` code as a deployment runs here; only the broker differs
(`MemoryBroker`). `EmbeddedRuntime` is the Python API a service uses to embed the engine;
`stepflow run` drives it for one workflow.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, Self
from uuid import UUID

from stepflow.adapters.backend import default_backend
from stepflow.adapters.memory.broker import MemoryBroker
from stepflow.adapters.read_side import ReadSide
from stepflow.adapters.worker import Worker
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.definitions import WorkflowDefinition
from stepflow.engine.state import WORKFLOW_FINAL, WorkflowState

StateListener = Callable[[WorkflowState], None]


class EmbeddedRuntime:
    """Start with `async with EmbeddedRuntime(engine, workers) as runtime:`."""

    def __init__(self, engine: WorkflowEngine, workers: Sequence[Worker] = (), *, projections: bool = False,
                 **backend_options: Any) -> None:
        """`projections=True` keeps the read models (and the workers view) up to date here;
        `backend_options` go to `default_backend` (e.g. `notifier`, `timeout_check_s`)."""
        self.engine = engine
        self.broker = MemoryBroker()
        self.read_side: ReadSide | None = None
        if projections:
            self.read_side = ReadSide(engine)
            backend_options.setdefault("on_worker", self.read_side.on_worker)
            backend_options.setdefault("after_store", self.read_side.wake)
        self.backend = default_backend(engine, self.broker.backend(), **backend_options)
        self.workers = list(workers)
        self._worker_tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    async def __aenter__(self) -> Self:
        if self.read_side is not None:
            self.read_side.start()
        await self.backend.start()
        for worker in self.workers:
            self._worker_tasks.append(asyncio.create_task(worker.run(self.broker.worker(), stop=self._stop)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stop_workers_and_backend()
        self.broker.close()
        if self.read_side is not None:
            self.read_side.stop()

    async def _stop_workers_and_backend(self) -> None:
        """Workers first (each finishes or hands back its job), then the backend."""
        self._stop.set()
        for task in self._worker_tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5)
        await self.backend.stop()

    async def start(self, definition: WorkflowDefinition, parameters: dict[str, Any] | None = None,
                    **kwargs: Any) -> UUID:
        return await self.backend.start_workflow(definition, parameters, **kwargs)

    async def state(self, workflow_id: UUID) -> WorkflowState:
        return await self.backend.in_store(self.engine.workflow_state, workflow_id)

    async def wait(self, workflow_id: UUID, *, timeout: float | None = None, poll_s: float = 0.1,
                   on_change: StateListener | None = None) -> WorkflowState:
        """Wait until the workflow ends (completed, error, stopped, deleted)."""

        async def follow() -> WorkflowState:
            seen = -1
            stored = -1  # the log's last notification id when the state was last read
            while True:
                self.backend.check()
                for task in self._worker_tasks:
                    if task.done() and task.exception():
                        raise task.exception()  # type: ignore[misc]
                latest = await self.backend.in_store(self.engine.max_notification_id)
                if latest != stored:  # rebuild the state only when something was stored
                    stored = latest
                    state = await self.state(workflow_id)
                    if state.version != seen:
                        seen = state.version
                        if on_change is not None:
                            on_change(state)
                    if state.status in WORKFLOW_FINAL:
                        return state
                await asyncio.sleep(poll_s)

        return await asyncio.wait_for(follow(), timeout)
