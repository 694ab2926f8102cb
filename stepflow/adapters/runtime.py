"""One runtime for every broker: a backend, its read side and in-process workers, in order.

`EmbeddedRuntime` (in-process broker) and `AmqpRuntime` (RabbitMQ) are this class with their
`Brokers` plugged in, and `stepflow.bootstrap` builds one for `stepflow serve`, `serve
--embedded` and `stepflow run`. One class because the order of things is the same whatever the
broker: on the way in, the read side, then the backend, then the workers; on the way out, the
workers first (each finishes or hands back its job, and announces `Terminated`), then the
backend, once it has read those last announcements (so the workers view shows them
terminated, not alive and later gone), then the broker, the read side. The RabbitMQ runtime
used to inherit this from the embedded one while skipping its constructor, so every change
to one had to be remembered in the other.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol, Self
from uuid import UUID

import structlog

from stepflow.adapters import protocol as p
from stepflow.adapters.backend import default_backend
from stepflow.adapters.inbox_batch import WorkerListener
from stepflow.adapters.read_side import ReadSide
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.definitions import WorkflowDefinition
from stepflow.engine.ports import BackendBroker, WorkerBroker
from stepflow.engine.state import WorkflowState
from stepflow.engine.statuses import WORKFLOW_FINAL
from stepflow.sdk import Worker

log = structlog.get_logger("stepflow.runtime")

StateListener = Callable[[WorkflowState], None]
WORKER_STOP_S = 5.0
TERMINATED_WAIT_S = 5.0  # for the backend to read the stopped workers' `Terminated`


class Brokers(Protocol):
    """A broker as a runtime needs it: the backend's side, one side per worker, readiness."""

    def backend(self) -> BackendBroker: ...

    def worker(self, worker: Worker) -> WorkerBroker: ...

    async def ready(self, tasks: Sequence[asyncio.Task[None]]) -> None:
        """Return once the workers made by `worker()` (running as `tasks`) can take orders."""

    def close(self) -> None: ...


class Runtime:
    """Use as `async with runtime:`, or `await runtime.open()` ... `await runtime.close()`."""

    def __init__(self, engine: WorkflowEngine, workers: Sequence[Worker], brokers: Brokers, *,
                 read_side: ReadSide | None = None, **backend_options: Any) -> None:
        """`read_side` keeps the views (and the workers view) here; `backend_options` go to `Backend`."""
        self.engine = engine
        self.brokers = brokers
        self.read_side = read_side
        if read_side is not None:
            backend_options.setdefault("on_worker", read_side.on_worker)
            backend_options.setdefault("after_store", read_side.wake)
        self._listener: WorkerListener | None = backend_options.get("on_worker")
        if self._listener is not None:
            backend_options["on_worker"] = self._worker_seen
        self.backend = default_backend(engine, brokers.backend(), **backend_options)
        self.workers = list(workers)
        self._worker_tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._closed = False
        self._terminated: set[str] = set()  # instance ids whose `Terminated` the backend read
        self._heard = asyncio.Event()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Start everything; if any part cannot start, stop what did and raise."""
        if self.read_side is not None:
            self.read_side.start()
        try:
            await self.backend.start()
            for worker in self.workers:
                broker = self.brokers.worker(worker)
                self._worker_tasks.append(asyncio.create_task(worker.run(broker, stop=self._stop)))
            await self.brokers.ready(self._worker_tasks)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Workers first (each finishes or hands back its job), then backend, broker, read side."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        for task in self._worker_tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, WORKER_STOP_S)
        await self._hear_terminations()
        await self.backend.stop()
        self.brokers.close()
        if self.read_side is not None:
            self.read_side.stop()

    def _worker_seen(self, message: p.WorkerDiscovery | p.WorkerStatus, at: datetime) -> None:
        assert self._listener is not None
        if isinstance(message, p.WorkerDiscovery) and message.activity == "Terminated":
            self._terminated.add(message.instance_id)  # heard, even if the listener fails on it
            self._heard.set()
        self._listener(message, at)

    async def _hear_terminations(self) -> None:
        """Keep the backend's inbox going until it has read the `Terminated` of every worker
        that stopped cleanly (each sends it last), so a listener (the workers view) gets
        them. A worker that failed or had to be cancelled may have sent none: not waited for."""
        if self._listener is None or not self.backend.running:
            return
        waiting = {worker.instance_id for worker, task in zip(self.workers, self._worker_tasks, strict=False)
                   if task.done() and not task.cancelled() and task.exception() is None}
        try:
            async with asyncio.timeout(TERMINATED_WAIT_S):
                while not waiting <= self._terminated:
                    self._heard.clear()
                    await self._heard.wait()
        except TimeoutError:
            log.warning("worker_termination_unheard", instances=sorted(waiting - self._terminated))

    def check(self) -> None:
        """Raise what stopped a backend loop or an in-process worker, if one stopped."""
        self.backend.check()
        for task in self._worker_tasks:
            if task.done() and task.exception():
                raise task.exception()  # type: ignore[misc]

    async def start(self, definition: WorkflowDefinition, parameters: dict[str, Any] | None = None,
                    **kwargs: Any) -> UUID:
        """Start a workflow (`labels`, `actor`, ... as `Backend.start_workflow`)."""
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
                self.check()
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
