"""The backend: broker messages in as events, job orders out from events.

Four loops on one asyncio loop, against any `BackendBroker` (RabbitMQ or in-process):

- inbox: take a batch of deliveries, translate each to a command (quarantining what is
  malformed), run the whole batch as one `engine.execute` (one transaction), and only then
  ack the batch. A crash before the ack redelivers, and the aggregate ignores message ids it
  has already applied, so the effect is exactly once.
- outbox (`stepflow.adapters.outbox`): hand stored orders on (jobs to the broker with
  confirms, notification steps to the `Notifier`), then advance the tracked position.
- timeouts: jobs with a `timeout_s` and no sign of life for that long get `RecordTimeout`
  (the clocks are kept by `Deadlines`).
- hooks: a `HookFollower` with its own tracked position calls workflow hooks
  (`stepflow.adapters.notify`).

The notifier and the hook follower are given to the backend (`default_backend` builds the
usual ones); it lends them its store thread, so a notification's result and a hook's reads
are stored and read like everything else.

`eventsourcing` is synchronous, so every command runs in ONE dedicated thread (`self._store`):
the event loop never blocks on SQLite or PostgreSQL, and commands never race each other (the
aggregate cache is mutated in place by commands). Batching is what keeps that single thread
ahead of the broker: one transaction per batch, not per message. The outbox reads the log and
writes its position in a second thread (`self._outbox_thread`): those calls touch no aggregate,
and queued behind the next inbound batch they would add its whole commit to every step's
latency.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar
from uuid import UUID

import structlog
from eventsourcing.persistence import PersistenceError

from stepflow.adapters import protocol as p
from stepflow.adapters.deadlines import Deadlines
from stepflow.adapters.faults import FAULT, FAULT_MESSAGE, crash
from stepflow.adapters.inbox import body_digest, message_key, translate
from stepflow.adapters.notify.hooks import HookFollower
from stepflow.adapters.notify.notifications import Notifier
from stepflow.adapters.outbox import Dispatch, OutboxPump, OutboxReader
from stepflow.adapters.persistence import despite_ddl_race
from stepflow.engine import commands as cmd
from stepflow.engine import events as ev
from stepflow.engine.application import GaveUp, WorkflowEngine
from stepflow.engine.definitions import WorkflowDefinition
from stepflow.engine.ports import BackendBroker, Delivery

log = structlog.get_logger("stepflow.backend")

T = TypeVar("T")

WorkerListener = Callable[[p.WorkerDiscovery | p.WorkerStatus, datetime], None]

# A redelivered message whose attempts to be applied alone ended this many times with the
# backend dying is quarantined. Two, not one: a backend killed for another reason while it
# applied an innocent message alone must not lose that message.
SUSPECT_ATTEMPTS = 2
# The store itself failing is no fault of a message: stop (and be restarted), quarantine nothing.
STORE_FAILURES: tuple[type[BaseException], ...] = (PersistenceError, GaveUp)


class Reject(NamedTuple):
    delivery: Delivery
    kind: str  # malformed, unknown, conflicting_duplicate, poison, refused
    reason: str
    digest: str | None = None
    applied_digest: str | None = None


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error)[:500]}"


class Backend:
    def __init__(
        self,
        engine: WorkflowEngine,
        broker: BackendBroker,
        *,
        notifier: Notifier,
        hooks: HookFollower,
        deadlines: Deadlines | None = None,
        batch_size: int = 256,
        batch_wait_s: float = 0.002,
        outbox_poll_s: float = 0.5,
        timeout_check_s: float = 1.0,
        max_body: int = p.MAX_BODY_BYTES,
        on_worker: WorkerListener | None = None,
        after_store: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.broker = broker
        self.batch_size = batch_size
        self.batch_wait_s = batch_wait_s
        self.outbox_poll_s = outbox_poll_s
        self.timeout_check_s = timeout_check_s
        self.max_body = max_body
        self.on_worker = on_worker
        self.after_store = after_store
        self._store = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stepflow-store")
        self._outbox_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stepflow-outbox")
        self._outbox_wakeup = asyncio.Event()
        self._outbox: OutboxPump | None = None  # from start()
        self._tasks: list[asyncio.Task[Any]] = []
        self._counts = {"batches": 0, "messages": 0, "quarantined": 0, "timeouts": 0,
                        "duplicates": 0, "late_answers": 0, "late_progress": 0}
        self.batch_sizes: Counter[int] = Counter()  # inbound batch size -> how many batches
        self.deadlines = deadlines if deadlines is not None else Deadlines()
        # notification steps and hooks: HTTP calls made here, results fed back as commands
        self.notifier = notifier
        if notifier.record is None:
            notifier.record = self._record_notification
        self.hooks = hooks
        if hooks.in_store is None:
            hooks.in_store = self.in_store
        self.dispatch = Dispatch(broker, notifier, self.deadlines)

    @property
    def stats(self) -> dict[str, int]:
        """Counters since start: inbound batches and messages by fate, orders, timeouts."""
        return {**self._counts, "orders": self.dispatch.published}

    async def in_store(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a synchronous store call in the store thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._store, lambda: fn(*args, **kwargs))

    async def in_outbox_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a log read or a position write of the outbox (no aggregate involved)."""
        return await asyncio.get_running_loop().run_in_executor(self._outbox_thread, fn, *args)

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        await self.broker.connect()
        # Two backends starting on a fresh store race to create the same tracking tables.
        reader = await despite_ddl_race(lambda: self.in_outbox_thread(OutboxReader, self.engine))
        self._outbox = OutboxPump(reader, self.dispatch.publish, self.in_outbox_thread)
        await despite_ddl_race(self.hooks.prepare)
        await self.in_store(self.deadlines.resume, self.engine, datetime.now(UTC))
        self._tasks = [
            asyncio.create_task(self._inbox_loop(), name="stepflow-inbox"),
            asyncio.create_task(self._outbox.run(self._outbox_wakeup, self.outbox_poll_s), name="stepflow-outbox"),
            asyncio.create_task(self._timeout_loop(), name="stepflow-timeouts"),
            asyncio.create_task(self.hooks.run(), name="stepflow-hooks"),
        ]
        log.info("backend_started", outbox_position=self._outbox.position)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._outbox is not None:
            self._outbox.cancel()  # unconfirmed batches: republished from the position next time
        await self.notifier.close()
        with contextlib.suppress(Exception):
            await self.broker.close()
        self._store.shutdown(wait=True)
        self._outbox_thread.shutdown(wait=True)

    @property
    def running(self) -> bool:
        """Started, and its inbox still taking messages."""
        return any(task.get_name() == "stepflow-inbox" and not task.done() for task in self._tasks)

    def check(self) -> None:
        """Raise the error of a loop that died, so a supervisor sees it."""
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception():
                raise task.exception()  # type: ignore[misc]

    # --- API for the embedding service -------------------------------------------------

    async def start_workflow(self, definition: WorkflowDefinition, parameters: dict[str, Any] | None = None,
                             **kwargs: Any) -> UUID:
        workflow_id = await self.in_store(self.engine.start_workflow, definition, parameters, **kwargs)
        self._stored()
        return workflow_id

    async def command(self, command: cmd.Command) -> None:
        await self.in_store(self.engine.command, command)
        self._stored()

    def _stored(self) -> None:
        self._outbox_wakeup.set()
        self.hooks.wake()
        if self.after_store is not None:
            self.after_store()

    # --- inbox -------------------------------------------------------------------------

    async def _inbox_loop(self) -> None:
        while True:
            batch = await self.broker.next_batch(self.batch_size, self.batch_wait_s)
            await self.handle_batch(batch)

    async def handle_batch(self, batch: Sequence[Delivery]) -> None:
        """Settle every delivery of the batch in exactly one visible place: applied, counted
        (duplicate, late progress), recorded as a late answer, or quarantined with its kind.

        A redelivered message may be what killed the backend last time, so each one is applied
        alone and counted first (the crash-loop breaker); fresh ones go as one transaction.
        """
        fresh = [d for d in batch if not d.redelivered]
        if fresh:
            await self._apply(fresh)
        for delivery in batch:
            if delivery.redelivered:
                await self._apply_suspect(delivery)
        self._counts["batches"] += 1
        self._counts["messages"] += len(batch)
        self.batch_sizes[len(batch)] += 1

    async def _apply(self, batch: Sequence[Delivery], also: Sequence[ev.Event] = ()) -> None:
        commands: list[cmd.Command] = []
        carriers: list[Delivery] = []
        done: list[Delivery] = []
        rejects: list[Reject] = []
        now = datetime.now(UTC)
        for delivery in batch:
            try:
                item = translate(delivery, self.max_body)
            except Exception as error:  # noqa: BLE001 - whatever the body does to a decoder (see `translate`)
                rejects.append(Reject(delivery, "malformed", _reason(error)))
                continue
            if isinstance(item, cmd.Command):
                commands.append(item)
                carriers.append(delivery)
            else:
                self._worker_seen(item, now)
                done.append(delivery)
        if commands:
            if FAULT == "poison_message" and any(c.cause == FAULT_MESSAGE for c in commands):
                crash()
            outcomes = await self._execute(commands, also)
            for delivery, command, outcome in zip(carriers, commands, outcomes, strict=True):
                if outcome.rejected:
                    rejects.append(Reject(delivery, outcome.kind or "refused", outcome.rejected,
                                          command.digest, outcome.applied_digest))
                else:
                    done.append(delivery)
                    self._settled(command, outcome, now)
            self._stored()
            if FAULT == "after_store_before_ack":
                crash()
            elif FAULT == "mid_batch" and len(done) >= 2:
                await self.broker.ack(done[: len(done) // 2])
                crash()
                done = done[len(done) // 2:]
        if rejects:
            await self._quarantine(rejects)
        await self.broker.ack(done)

    async def _execute(self, commands: list[cmd.Command], also: Sequence[ev.Event] = ()) -> list[cmd.Outcome]:
        """The batch as one transaction; if applying it raises anything but a store failure,
        each command alone, so only the one that raises is quarantined (as `poison`)."""
        try:
            return await self.in_store(self.engine.execute, commands, also)
        except STORE_FAILURES:
            raise
        except Exception as error:  # noqa: BLE001 - a bug met while applying one message
            if len(commands) == 1:
                log.error("message_poisoned", cause=commands[0].cause, error=_reason(error))
                return [cmd.Outcome(rejected=f"raised while applied: {_reason(error)}", kind="poison")]
            log.warning("batch_raised_applying_alone", commands=len(commands), error=_reason(error))
            return [outcome for command in commands for outcome in await self._execute([command])]

    async def _apply_suspect(self, delivery: Delivery) -> None:
        """A redelivered message, alone: count the attempt in the store first, so that if it
        kills the backend again the next backend knows, and quarantines it instead."""
        attempts, cleared = await self.in_store(self.engine.suspect, message_key(delivery),
                                                delivery.message_id, delivery.queue)
        if attempts >= SUSPECT_ATTEMPTS:
            await self._quarantine([Reject(delivery, "poison", (
                f"the backend died {attempts} times while applying this message alone"))])
            return
        await self._apply([delivery], also=(cleared,))

    def _worker_seen(self, item: p.WorkerDiscovery | p.WorkerStatus, now: datetime) -> None:
        if self.on_worker is None:
            return
        try:
            self.on_worker(item, now)
        except Exception as error:  # noqa: BLE001 - a view's bug must not stop the inbox
            log.error("worker_listener_failed", error=_reason(error))

    def _settled(self, command: cmd.Command, outcome: cmd.Outcome, now: datetime) -> None:
        if outcome.ignored is None:
            self._track(command, now)
            return
        key = {"duplicate": "duplicates", "late": "late_answers", "late_progress": "late_progress"}[outcome.ignored]
        self._counts[key] += 1
        log.debug("message_" + outcome.ignored, cause=command.cause, workflow_id=str(command.workflow_id))

    async def _quarantine(self, rejects: Sequence[Reject]) -> None:
        """Record the batch's unusable messages in one transaction, then keep and ack them."""
        self._counts["quarantined"] += len(rejects)
        messages = []
        for r in rejects:
            log.warning("message_quarantined", queue=r.delivery.queue, message_id=r.delivery.message_id,
                        kind=r.kind, reason=r.reason)
            messages.append(cmd.Quarantine(
                # one record per distinct body: a clash with an applied id is a record of its own
                key=f"{message_key(r.delivery)}#{body_digest(r.delivery.body)}",
                message_id=r.delivery.message_id, queue=r.delivery.queue, kind=r.kind, reason=r.reason,
                headers={str(k): str(v)[:200] for k, v in r.delivery.headers.items()},
                body=r.delivery.body, digest=r.digest, applied_digest=r.applied_digest,
            ))
        await self.in_store(self.engine.record_quarantined, messages)
        await self.broker.quarantine([(r.delivery, f"{r.kind}: {r.reason}") for r in rejects])

    # --- outbox ------------------------------------------------------------------------

    async def flush_outbox(self) -> int:
        """Publish everything stored and not yet published; return how many orders went."""
        return await self._pump().drain()

    @property
    def outbox_position(self) -> int | None:
        """The outbox's tracked position (None before `start`)."""
        return self._outbox.position if self._outbox is not None else None

    def _pump(self) -> OutboxPump:
        assert self._outbox is not None, "start the backend first"
        return self._outbox

    async def _record_notification(self, command: cmd.Command) -> cmd.Outcome:
        """A notification step's result, fed back by the notifier like a worker's answer."""
        (outcome,) = await self.in_store(self.engine.execute, [command])
        self._track(command, datetime.now(UTC))
        self._stored()
        return outcome

    # --- timeouts ----------------------------------------------------------------------

    def _track(self, command: cmd.Command, now: datetime) -> None:
        """A sign of life restarts the job's clock; any other answer stops it."""
        job_id = getattr(command, "job_id", None)
        if job_id is None:
            return
        if isinstance(command, cmd.RecordProgress):
            self.deadlines.touch(job_id, now)
        else:
            self.deadlines.end(job_id)

    async def _timeout_loop(self) -> None:
        while True:
            await asyncio.sleep(self.timeout_check_s)
            await self.check_timeouts()

    async def check_timeouts(self) -> None:
        expired = self.deadlines.expired(datetime.now(UTC))
        if not expired:
            return
        commands = [cmd.RecordTimeout(workflow_id=wf, job_id=job, cause=f"timeout:{job}") for job, wf in expired]
        await self.in_store(self.engine.execute, commands)
        self._counts["timeouts"] += len(commands)
        for job_id, _ in expired:
            self.deadlines.end(job_id)
        log.info("jobs_timed_out", count=len(expired))
        self._stored()


def default_backend(engine: WorkflowEngine, broker: BackendBroker, *, notifier: Notifier | None = None,
                    outbox_poll_s: float = 0.5, **options: Any) -> Backend:
    """A `Backend` with its usual helpers: a `Notifier` (allowed hosts from
    $STEPFLOW_NOTIFICATION_HOSTS) unless one is given, a `HookFollower` that polls as often
    as the outbox, and empty `Deadlines`. `options` are the Backend's own."""
    notifier = notifier if notifier is not None else Notifier()
    hooks = HookFollower(engine, notifier, poll_s=outbox_poll_s)
    return Backend(engine, broker, notifier=notifier, hooks=hooks, deadlines=Deadlines(),
                   outbox_poll_s=outbox_poll_s, **options)
