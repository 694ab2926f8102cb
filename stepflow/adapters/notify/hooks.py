"""Workflow hooks: HTTP calls when a workflow completes or fails, at least once.

The `HookFollower` follows the notification log (`WorkflowCompleted`, `WorkflowFailed`) from
its own tracked position (`Tracking("hooks", id)`, a `LogFollower`), apart from the outbox, so
a slow hook endpoint never delays job orders. For each ended workflow whose definition has hooks, it
renders them (scope: `workflow.*` parameters, `steps.S.outputs.*` of completed steps, and
`run.id|status|reason|definition|version`), makes the calls (`Notifier.call_hook`: a few
tries, then a logged failure), and only then advances its position: a crash re-sends.

On first start over an existing store it begins at the end of the log, so upgrading never
replays the hooks of workflows that ended long ago.

Its reads run in the backend's store thread, which the backend lends it (`in_store`) when
the follower is handed to it. They are rare: the engine tells the follower about each commit
this process makes (`CommitsSeen`, in `stepflow.engine.follower`), and a wake-up whose
commits follow on from what was scanned and end no workflow with hooks moves `scanned`
without reading the log (before, every inbound batch cost a read of the log in the store
thread, on the step path). The log is read after a gap
(another process or thread committed in between), for a commit that may call hooks, and on
the poll (other processes' commits).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import structlog

from stepflow.adapters.notify.notifications import Notifier
from stepflow.adapters.wakeup import woken
from stepflow.engine import events as ev
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.decisions import template_scope
from stepflow.engine.definitions import NotificationSpec, WorkflowDefinition
from stepflow.engine.follower import CommitsSeen, LogFollower
from stepflow.engine.templates import TemplateError, render

log = structlog.get_logger("stepflow.hooks")

HOOKS = "hooks"
TOPICS = ("WorkflowCompleted", "WorkflowFailed")
InStore = Callable[..., Awaitable[Any]]

Pending = tuple[int, str, str, list[dict[str, Any]]]  # (notification id, workflow id, when, requests)


class HookReader:
    """The synchronous half, run in the store thread."""

    def __init__(self, engine: WorkflowEngine, batch_size: int = 100) -> None:
        self.engine = engine
        self.log = LogFollower(engine, HOOKS, TOPICS, batch_size=batch_size, new_at_end=True)
        # How far the log is known to hold no ended workflow after `position`. Kept in memory
        # only: without it every wake-up (one per inbound batch) re-scanned the whole log since
        # the last ended workflow, a scan that grows with the log (python -m benchmarks scale).
        self.scanned = self.position

    @property
    def position(self) -> int:
        return self.log.position

    def next_batch(self) -> tuple[int, list[Pending]]:
        """(last id read, hook calls due) up to the first batch that has calls; (position, [])
        when none is due up to the log's end. Ended workflows without hooks (most) move only
        `scanned`: the tracked position is written when hooks were called, not once per wake-up
        (one commit in the store thread per inbound batch, on the step path)."""
        upto = self.engine.max_notification_id()
        start = max(self.position, self.scanned)
        while items := self.log.read(start, stop=upto):
            pending: list[Pending] = []
            for notification_id, event in items:
                requests = self._requests(event)
                if requests:
                    when = "on_completed" if isinstance(event, ev.WorkflowCompleted) else "on_error"
                    pending.append((notification_id, str(event.originator_id), when, requests))
            if pending:
                return items[-1][0], pending
            start = self.scanned = items[-1][0]
        self.scanned = max(start, upto)
        return self.position, []

    def _requests(self, event: ev.Event) -> list[dict[str, Any]]:
        definition = self.engine.cached_definition(event.originator_id)
        if definition is None:
            started = next(iter(self.engine.events.get(event.originator_id, limit=1)), None)
            if not isinstance(started, ev.WorkflowStarted):
                return []
            definition = started.definition
        hooks = _hooks_for(definition, event)
        if not hooks:
            return []
        state = self.engine.workflow_state(event.originator_id)
        scope = template_scope(state, run=True)
        out = []
        for i, spec in enumerate(hooks):
            try:
                out.append(render(spec.as_parameters(), scope))
            except TemplateError as error:
                log.warning("hook_not_rendered", workflow_id=str(state.id), index=i, error=str(error))
        return out

    def advance(self, position: int) -> None:
        self.log.record(position)


def _hooks_for(definition: WorkflowDefinition, event: ev.Event) -> tuple[NotificationSpec, ...]:
    if isinstance(event, ev.WorkflowCompleted):
        return definition.hooks.on_completed
    return definition.hooks.on_error


class HookFollower:
    """The asynchronous half: wakes on stored events (or polls), calls, then advances."""

    def __init__(self, engine: WorkflowEngine, notifier: Notifier, *, poll_s: float = 0.5,
                 in_store: InStore | None = None) -> None:
        self.engine = engine
        self.notifier = notifier
        self.poll_s = poll_s
        self.in_store = in_store  # the backend's store thread, lent when it takes this follower
        self._wakeup = asyncio.Event()
        self._lock = asyncio.Lock()  # one flush at a time, or a workflow's hooks are called twice
        self.reader: HookReader | None = None
        # this process's commits (the backend feeds it from `WorkflowEngine.on_saved`), marked
        # passable when they end no workflow with hooks
        self.stored: CommitsSeen[Literal[True]] = CommitsSeen(self._passable)
        self.log_reads = 0  # (for the curious, and the tests)

    def _passable(self, events: list[ev.Event]) -> Literal[True] | None:
        """True when the commit ends no workflow whose definition has hooks (store thread:
        the aggregate was just saved, so it is in the cache; not there, the log is read)."""
        for event in events:
            if isinstance(event, (ev.WorkflowCompleted, ev.WorkflowFailed)):
                definition = self.engine.cached_definition(event.originator_id)
                if definition is None or _hooks_for(definition, event):
                    return None
        return True

    def wake(self) -> None:
        self._wakeup.set()

    @property
    def position(self) -> int:
        """How far the log is handled: the tracked position, or further where only ended
        workflows without hooks follow it (`HookReader.scanned`)."""
        return max(self.reader.position, self.reader.scanned) if self.reader is not None else 0

    async def prepare(self) -> None:
        """Read the tracked position (before the backend takes commands, so no end is missed)."""
        if self.reader is None:
            self.reader = await self._in_store(HookReader, self.engine)

    async def run(self) -> None:
        await self.prepare()
        while True:
            polled = not await woken(self._wakeup, self.poll_s)
            self._wakeup.clear()
            try:
                await self.flush(read_log=polled)
            except Exception:
                log.exception("hooks_failed")

    async def flush(self, read_log: bool = True) -> int:
        """Call the hooks of every workflow ended since the position; return how many calls.
        Unless `read_log`, this process's commits that call no hook are passed over from
        memory, and the log is read only if one of them may call a hook or does not follow on."""
        assert self.reader is not None
        calls = 0
        async with self._lock:
            if not read_log:
                reader = self.reader
                scanned = max(reader.position, reader.scanned)
                while (passed := self.stored.take(scanned)) is not None:
                    scanned = passed[0]
                reader.scanned = scanned
                if not self.stored.waiting():
                    return 0  # every commit of ours passed over: no read
            self.log_reads += 1
            while True:
                last, pending = await self._in_store(self.reader.next_batch)
                if last == self.reader.position:
                    return calls
                for _, workflow_id, when, requests in pending:
                    await asyncio.gather(*(self.notifier.call_hook(r, workflow_id=workflow_id, when=when)
                                           for r in requests))
                    calls += len(requests)
                await self._in_store(self.reader.advance, last)

    async def _in_store(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self.in_store is not None, "hand the follower to a backend first"
        return await self.in_store(fn, *args)
