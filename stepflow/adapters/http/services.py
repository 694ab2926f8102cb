"""What the HTTP handlers reach: the engine, the views, the backend, the catalog, auth.

Threads: `eventsourcing` and the view stores are synchronous. Commands and starts go through
the backend's store thread when there is a backend (so the backend's aggregate cache stays
right and its outbox wakes up at once), else through one thread of our own; reads (views,
history, a workflow's first event) run in Starlette's thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from uuid import UUID

import structlog
from starlette.concurrency import run_in_threadpool

from stepflow.adapters.http.auth import TokenAuth
from stepflow.adapters.http.catalog import DefinitionCatalog
from stepflow.adapters.http.queues import QueueDepths
from stepflow.adapters.start_batch import StartBatcher, with_position
from stepflow.adapters.worker_control import ORDERS, direct_order
from stepflow.engine import commands as cmd
from stepflow.engine import events as ev
from stepflow.engine.application import Start, WorkflowEngine
from stepflow.engine.definitions import WorkflowDefinition
from stepflow.projections import ProjectionRunner, ViewStore

log = structlog.get_logger("stepflow.http")
T = TypeVar("T")
DEFINITION_CACHE = 10_000
READ_YOUR_WRITES_S = 5.0


class Services:
    def __init__(self, engine: WorkflowEngine, runner: ProjectionRunner, *, backend: Any = None,
                 catalog: DefinitionCatalog | None = None, auth: TokenAuth | None = None,
                 own_runner: bool = False) -> None:
        self.engine = engine
        self.runner = runner
        self.store: ViewStore = runner.store
        self.backend = backend
        self.catalog = catalog or DefinitionCatalog()
        self.auth = auth or TokenAuth()
        self.own_runner = own_runner
        self._writer: ThreadPoolExecutor | None = None
        self._definitions: OrderedDict[str, WorkflowDefinition] = OrderedDict()
        self.tracking: Any = None  # a tracking recorder, to read the outbox's position (metrics)
        self.queue_depths = QueueDepths()  # the broker's queues, for the metrics
        # the backend's, when there is one: its starts ride on its inbound commits under load
        self.starts: StartBatcher = backend.starts if backend is not None else StartBatcher(self._commit_starts)
        self._view_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._views_at = 0  # where the runner's last pass left every view
        runner.on_pass(self._views_passed)

    # --- threads ------------------------------------------------------------------------

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await run_in_threadpool(functools.partial(fn, *args, **kwargs))

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self.backend is not None:
            result: T = await self.backend.in_store(fn, *args, **kwargs)
            return result
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stepflow-http-store")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None

    # --- commands -----------------------------------------------------------------------

    async def start(self, definition: WorkflowDefinition, parameters: dict[str, Any], **kwargs: Any) -> tuple[UUID, int]:
        """Start a workflow; return its id and a log position that includes its start.

        Grouped with the other starts under way (`StartBatcher`): one commit for all of them.
        Answered after the commit, not after the views: a start is a write, and the views
        follow it within a pass (`ProjectionRunner.pass_every`). Reading it back right away
        works: a workflow's page waits for the views when the log has it and they do not yet
        (`get_workflow`), and a listing waits when asked to (`?after=` the position returned).
        Waiting here made every start wait for a pass of every view, which halved the starts
        one process answers (issue #14)."""
        workflow_id = await self.starts.start(Start(definition=definition, parameters=parameters, **kwargs))
        self._started()
        return workflow_id, self.starts.position

    async def start_many(self, starts: list[Start]) -> tuple[list[UUID | Exception], int]:
        """Start several workflows in one commit; each one's id or error, and a log position
        that includes them (answered after the commit, as `start`)."""
        answers = await self.starts.settle(starts)
        self._started()
        return answers, self.starts.position

    def _started(self) -> None:
        if self.backend is not None:  # (our own commits wake the views themselves)
            self.runner.wake()  # the views follow within a pass; a reader that waits hurries them

    async def _commit_starts(self, starts: Sequence[Start]) -> list[UUID | Exception]:
        """Without a backend (`stepflow serve` with no broker): our own store thread."""
        answers, position = await self.write(with_position, self.engine, self.engine.start_workflows, starts)
        self.starts.committed_at(position)
        self.runner.wake()  # the views follow within a pass; a reader that waits hurries them
        return answers

    async def command(self, command: cmd.Command) -> int:
        """Run an operator command (raises `Rejected`); return a position that includes it."""
        if self.backend is not None:
            await self.backend.command(command)
        else:
            await self.write(self.engine.command, command)
        return await self.settled()

    async def settled(self) -> int:
        """Wait (briefly) until the views show our own last write; the log position read."""
        position = await self.read(self.engine.max_notification_id)
        await self.views_reach(position, READ_YOUR_WRITES_S)
        return position

    async def views_reach(self, position: int, timeout: float) -> bool:
        """Wait until every view has applied `position`; False on timeout.

        The runner says where its views are after every pass (`ProjectionRunner.on_pass`),
        and the waiters that position covers are answered on their event loop: no request
        holds a thread or polls the store. A pass that starts after the waiter is listed (the
        runner is hurried after the listing) reports a position that covers it: either it
        finds the waiter listed, or it reported before the listing and the check after it
        sees its position (the runner sets `_views_at` before it looks at the waiters)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._view_waiters.append((position, future))
        if position <= self._views_at:
            future.set_result(None)
        else:
            self.runner.hurry()
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return False
        return True

    @property
    def views_at(self) -> int:
        """Where the runner's last pass left every view."""
        return self._views_at

    def _views_passed(self, position: int) -> None:
        """The runner's thread, after a pass: answer (on their loops) those now covered."""
        self._views_at = position  # not the highest seen: a view being rebuilt goes back
        loops = {future.get_loop() for p, future in self._view_waiters if p <= position}
        for loop in loops:
            with contextlib.suppress(RuntimeError):  # a closed loop (a test client's that ended)
                loop.call_soon_threadsafe(self._answer_waiters, loop, position)

    def _answer_waiters(self, loop: asyncio.AbstractEventLoop, reached: int) -> None:
        waiting = []
        for position, future in self._view_waiters:
            if future.done() or future.get_loop().is_closed():
                continue
            if position <= reached and future.get_loop() is loop:
                future.set_result(None)
            else:
                waiting.append((position, future))
        self._view_waiters = waiting

    async def order_worker(self, instance_id: str, action: str, *, actor: str, request: str) -> int:
        """Send a worker a direct order through the backend's broker, record it (`WorkerOrdered`),
        and return a position the views have reached (so the listing shows it)."""
        await self.backend.broker.publish_direct(direct_order(instance_id, action))
        position: int = await self.write(self.engine.record_worker_order, actor=actor, instance_id=instance_id,
                                         order=ORDERS[action], via="http", request=request)
        await self.views_reach(position, READ_YOUR_WRITES_S)
        return position

    async def record_refused(self, **fields: Any) -> None:
        try:
            await self.write(self.engine.record_refused, **fields)
        except Exception:
            log.exception("refusal_not_recorded", **{k: v for k, v in fields.items() if k != "groups"})

    # --- a workflow's definition (for rights and the DAG), cached: it never changes --------

    async def workflow_definition(self, workflow_id: str) -> WorkflowDefinition | None:
        return (await self.workflow_definitions([workflow_id])).get(workflow_id)

    async def workflow_definitions(self, workflow_ids: Iterable[str]) -> dict[str, WorkflowDefinition]:
        """The definitions of many workflows (a listing page): one trip to the store for the misses."""
        found: dict[str, WorkflowDefinition] = {}
        missing: list[UUID] = []
        for workflow_id in workflow_ids:
            cached = self._definitions.get(workflow_id)
            if cached is not None:
                self._definitions.move_to_end(workflow_id)
                found[workflow_id] = cached
                continue
            try:
                missing.append(UUID(workflow_id))
            except ValueError:
                continue
        if missing:
            for workflow_id, definition in (await self.read(_first_definitions, self.engine, missing)).items():
                found[workflow_id] = self._definitions[workflow_id] = definition
            while len(self._definitions) > DEFINITION_CACHE:
                self._definitions.popitem(last=False)
        return found


def _first_definitions(engine: WorkflowEngine, workflow_ids: list[UUID]) -> dict[str, WorkflowDefinition]:
    out = {}
    for workflow_id in workflow_ids:
        first = next(iter(engine.events.get(workflow_id, limit=1)), None)
        if isinstance(first, ev.WorkflowStarted):
            out[str(workflow_id)] = first.definition
    return out
