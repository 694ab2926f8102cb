"""The backend: broker messages in as events, job orders out from events.

Four loops on one asyncio loop, against any `BackendBroker` (RabbitMQ or in-process):

- inbox: take a batch of deliveries and hand it to the `Inbox`
  (`stepflow.adapters.inbox_batch`), which translates each to a command (quarantining what
  is malformed), runs the whole batch as one `engine.execute` (one transaction), and only
  then acks the batch. A crash before the ack redelivers, and the aggregate ignores message
  ids it has already applied, so the effect is exactly once.
- outbox (`stepflow.adapters.outbox`): hand stored orders on (jobs to the broker with
  confirms, notification steps to the `Notifier`), then advance the tracked position.
- timeouts: jobs with a `timeout_s` and no sign of life for that long get `RecordTimeout`
  (the clocks are kept by `Deadlines`).
- hooks: a `HookFollower` with its own tracked position calls workflow hooks
  (`stepflow.adapters.notify`).

The inbox, outbox, timeouts and hooks are the ACTIVE parts: they run only while this process
holds the store's lease (`stepflow.adapters.lease`), so that several backends on one store
and one broker publish each order once, take each response once, and fire each timer and hook
once. A backend without the lease is a standby: connected to the broker to publish operators'
direct orders, but consuming nothing; commands it is given (HTTP starts, stops) are stored,
and the active backend's outbox publishes them. The lease loop takes over when the holder
dies, and steps down if the lease is lost; each time it becomes active it re-reads every
position (outbox, hooks, deadlines) from the store, since another process moved them.

The notifier and the hook follower are given to the backend (`default_backend` builds the
usual ones); it lends them its store thread, so a notification's result and a hook's reads
are stored and read like everything else.

`eventsourcing` is synchronous, so every command runs in ONE dedicated thread (`self._store`):
the event loop never blocks on SQLite or PostgreSQL, and commands never race each other (the
aggregate cache is mutated in place by commands). Batching is what keeps that single thread
ahead of the broker: one transaction per batch, not per message. The outbox publishes a
commit's orders from memory (`stepflow.adapters.outbox.JustStored`); it reads the log in a
second thread (`self._outbox_thread`) and writes its position in a third: those calls touch no
aggregate, and queued behind the next inbound batch (or a read behind a write) they would add a
commit to every step's latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

import structlog
from eventsourcing.persistence import Recording

from stepflow.adapters import protocol as p
from stepflow.adapters.alone import Alone
from stepflow.adapters.deadlines import Deadlines
from stepflow.adapters.inbox_batch import Inbox, WorkerListener
from stepflow.adapters.lease import POLL_S, HeldLease, Lease
from stepflow.adapters.notify.hooks import HookFollower
from stepflow.adapters.notify.notifications import Notifier
from stepflow.adapters.outbox import Dispatch, JustStored, OutboxPump, OutboxReader
from stepflow.adapters.persistence import despite_ddl_race
from stepflow.adapters.start_batch import StartBatcher, with_position
from stepflow.adapters.takeover import DRAIN_S, Window
from stepflow.adapters.wakeup import cancelled, woken
from stepflow.adapters.worker_poll import STATUS_EVERY_S, poll_workers
from stepflow.engine import commands as cmd
from stepflow.engine import events as ev
from stepflow.engine.application import Start, WorkflowEngine
from stepflow.engine.definitions import WorkflowDefinition
from stepflow.engine.ports import BackendBroker, Delivery, StopJob

log = structlog.get_logger("stepflow.backend")

T = TypeVar("T")


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
        lease: Lease | None = None,
        lease_poll_s: float = POLL_S,
        worker_poll_s: float = STATUS_EVERY_S,
    ) -> None:
        self.engine = engine
        self.worker_poll_s = worker_poll_s  # how often every worker is asked its status
        self.broker = broker
        self.batch_size = batch_size
        self.batch_wait_s = batch_wait_s
        self.outbox_poll_s = outbox_poll_s
        self.timeout_check_s = timeout_check_s
        self.after_store = after_store
        self.lease: Lease = lease if lease is not None else HeldLease()
        self.lease.on_wake = self._outbox_woken
        self.lease_poll_s = lease_poll_s
        self.active = False  # holds the lease and runs the active parts
        self._active_tasks: list[asyncio.Task[Any]] = []
        self._store = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stepflow-store")
        self._outbox_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stepflow-outbox")
        self._position_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stepflow-outbox-position")
        self._outbox_wakeup = asyncio.Event()
        self._outbox: OutboxPump | None = None  # from start()
        self._just_stored = JustStored()  # this process's commits, for the outbox to publish from memory
        engine.on_saved = self._saved
        self._starts = StartBatcher(self._commit_starts, window_s=batch_wait_s)  # concurrent starts share a commit
        self._drained = asyncio.Event()  # the inbox took a batch short of full: the queues were empty
        self._answers_stored = asyncio.Event()
        self._window = Window(engine)  # what the last active backend left behind (`stepflow.adapters.takeover`)
        self._tasks: list[asyncio.Task[Any]] = []
        self._timeouts = 0
        self.deadlines = deadlines if deadlines is not None else Deadlines()
        self._alone = Alone()  # the crash-loop breaker's suspects keep the outbox at rest
        self.inbox = Inbox(engine, broker, self.in_store, track=self._track, stored=self._stored,
                           max_body=max_body, on_worker=on_worker, take_starts=self._starts.take,
                           alone=self._alone)
        # notification steps and hooks: HTTP calls made here, results fed back as commands
        self.notifier = notifier
        if notifier.record is None:
            notifier.record = self._record_notification
        self.hooks = hooks
        if hooks.in_store is None:
            hooks.in_store = self.in_store
        self.dispatch = Dispatch(broker, notifier, self.deadlines)

    def _saved(self, recordings: list[Recording[UUID]]) -> None:
        """Each commit of this process, as the engine makes it (store thread): the outbox
        publishes its orders and the hooks pass over it from memory."""
        self._just_stored(recordings)
        self.hooks.stored(recordings)

    @property
    def stats(self) -> dict[str, int]:
        """Counters since start: inbound batches and messages by fate, orders, timeouts."""
        return {**self.inbox.counts, "timeouts": self._timeouts, "orders": self.dispatch.published}

    @property
    def batch_sizes(self) -> Counter[int]:
        """Inbound batch size -> how many batches."""
        return self.inbox.batch_sizes

    @property
    def max_body(self) -> int:
        """Inbound bodies over this many bytes are quarantined as malformed."""
        return self.inbox.max_body

    @property
    def on_worker(self) -> WorkerListener | None:
        """Who hears worker announcements (the workers view, a log line...)."""
        return self.inbox.on_worker

    async def in_store(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a synchronous store call in the store thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._store, lambda: fn(*args, **kwargs))

    async def in_outbox_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a log read of the outbox (no aggregate involved)."""
        return await asyncio.get_running_loop().run_in_executor(self._outbox_thread, fn, *args)

    async def _in_position_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._position_thread, fn, *args)

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Connect; become active at once if the lease is free, else stand by (and keep
        trying in the background)."""
        held = await self.lease.try_acquire()
        if not held and hasattr(self.broker, "consume_at_connect"):
            self.broker.consume_at_connect = False  # a standby consumes nothing
        try:
            await self.broker.connect()
            if held:
                await self._activate(waited_s=0.0, consuming=True, takeover=False)
        except BaseException:
            await self.lease.close()
            raise
        self._tasks = [asyncio.create_task(self._lease_loop(), name="stepflow-lease")]
        log.info("backend_started", active=self.active, lease=self.lease.name,
                 outbox_position=self.outbox_position)

    async def stop(self) -> None:
        await cancelled(self._tasks)
        self._tasks = []
        await self._deactivate(settle=True)
        with contextlib.suppress(Exception):
            await self.broker.close()  # unacked deliveries go back to the queues
        await self.lease.close()  # only then may another backend take over
        self._store.shutdown(wait=True)
        self._outbox_thread.shutdown(wait=True)
        self._position_thread.shutdown(wait=True)

    # --- the lease: active parts only while it is held -------------------------------------

    async def _lease_loop(self) -> None:
        while True:
            if not self.active:
                since = time.monotonic()
                while not await self.lease.try_acquire():
                    await asyncio.sleep(self.lease_poll_s)
                await self._activate(waited_s=time.monotonic() - since,
                                     consuming=not hasattr(self.broker, "start_consuming"), takeover=True)
            await self.lease.watch()
            lost = time.monotonic()
            await self._deactivate()
            await self._reconnect_as_standby()
            log.warning("lease_lost", lease=self.lease.name, step_down_s=round(time.monotonic() - lost, 3))
            # A backend whose lock connection just failed is the worse candidate: let a
            # standby take over first (it tries every `lease_poll_s`).
            await asyncio.sleep(2 * self.lease_poll_s)

    async def _activate(self, *, waited_s: float, consuming: bool, takeover: bool) -> None:
        """Start the active parts from the positions stored now (another backend moved them)."""
        began = time.monotonic()
        # Two backends starting on a fresh store race to create the same tracking tables.
        reader = await despite_ddl_race(lambda: self.in_outbox_thread(OutboxReader, self.engine))
        self.hooks.reader = None
        await despite_ddl_race(self.hooks.prepare)
        self._clear_deadlines()
        await self.in_store(self.deadlines.resume, self.engine, datetime.now(UTC))
        if not consuming:
            await self.broker.start_consuming()  # type: ignore[attr-defined]
        self._drained.clear()
        inbox = asyncio.create_task(self._inbox_loop(), name="stepflow-inbox")
        if takeover:
            # The answers the dead holder had taken and not acked come back to the queues at
            # once: store them before the outbox decides which orders of its unconfirmed
            # window to publish again, or it cannot see that their jobs already ran.
            await woken(self._drained, DRAIN_S)
        self._window = await Window.open(self.engine, reader.position, self.in_outbox_thread, takeover=takeover)
        self._just_stored.clear()  # the reader starts from the stored position: it reads what came before
        self._outbox = OutboxPump(reader, self._publish, self.in_outbox_thread, stored=self._just_stored,
                                  write_in_thread=self._in_position_thread, alone=self._alone)
        self._active_tasks = [
            inbox,
            asyncio.create_task(self._outbox.run(self._outbox_wakeup, self.outbox_poll_s), name="stepflow-outbox"),
            asyncio.create_task(self._timeout_loop(), name="stepflow-timeouts"),
            asyncio.create_task(self.hooks.run(), name="stepflow-hooks"),
            asyncio.create_task(poll_workers(self.broker, self.worker_poll_s), name="stepflow-worker-poll"),
        ]
        self.active = True
        if takeover:
            self._outbox_wakeup.set()  # a take-over: publish at once what was stored meanwhile
        log.info("lease_acquired", lease=self.lease.name, waited_s=round(waited_s, 3),
                 activate_s=round(time.monotonic() - began, 3), outbox_position=self._outbox.position,
                 window=len(self._window.held), reached=len(self._window.reached))

    async def _deactivate(self, settle: bool = False) -> None:
        """Stop every active part: after this, this process publishes, consumes and fires nothing.
        On a clean stop (`settle`) the outbox position is written over what is confirmed."""
        was_active, self.active = self.active, False
        await cancelled(self._active_tasks)
        self._active_tasks = []
        if settle and was_active and self._outbox is not None:
            try:
                await self._outbox.settle_confirmed()
            except Exception as error:  # noqa: BLE001  the store may be gone: the next start republishes
                log.warning("outbox_position_not_written", error=repr(error))
        if self._outbox is not None:
            self._outbox.cancel()  # unconfirmed batches: republished from the position by the next holder
        await self.notifier.close()  # notification calls under way: the next holder repeats them
        self._clear_deadlines()
        self.hooks.reader = None  # its position is the holder's to move now

    async def _reconnect_as_standby(self) -> None:
        """Give back the deliveries this process holds (closing the channel requeues them)
        and keep a connection for publishing only."""
        with contextlib.suppress(Exception):
            await self.broker.close()
        if hasattr(self.broker, "consume_at_connect"):
            self.broker.consume_at_connect = False
        await self.broker.connect()

    async def _publish(self, orders: list[ev.JobSubmitted], stops: list[StopJob]) -> None:
        """Publish, except what the last active backend left that a worker already took, and
        holding back the rest of its window a while (`stepflow.adapters.takeover`)."""
        now, held = self._window.split(orders)
        await self.dispatch.publish(now, stops)
        if held:
            async with self._alone.aside():  # waiting for the workers, who answer through the inbox
                unheard_of = await self._window.unheard_of(held, self.in_outbox_thread, self._answers_stored)
            await self.dispatch.publish(unheard_of, [])

    def _clear_deadlines(self) -> None:
        for job_id in list(self.deadlines.armed()):
            self.deadlines.end(job_id)

    def _outbox_woken(self) -> None:
        """Another process stored events (a PostgreSQL notification): orders may be among them."""
        if self.active and self._outbox is not None:
            self._outbox.read_later()
            self._outbox_wakeup.set()

    @property
    def running(self) -> bool:
        """Started, and its inbox still taking messages."""
        return any(task.get_name() == "stepflow-inbox" and not task.done() for task in self._active_tasks)

    def check(self) -> None:
        """Raise the error of a loop that died, so a supervisor sees it."""
        for task in (*self._tasks, *self._active_tasks):
            if task.done() and not task.cancelled() and task.exception():
                raise task.exception()  # type: ignore[misc]

    # --- API for the embedding service -------------------------------------------------

    async def start_workflow(self, definition: WorkflowDefinition, parameters: dict[str, Any] | None = None,
                             **kwargs: Any) -> UUID:
        """Store a start, in one commit with the others under way (`StartBatcher`)."""
        labels = tuple(kwargs.pop("labels", ()))
        return await self._starts.start(Start(definition=definition, parameters=parameters or {},
                                              labels=labels, **kwargs))

    @property
    def starts(self) -> StartBatcher:
        """Where every start of this process goes (the HTTP API's too): grouped, and under load
        committed with an inbound batch; `position` includes every start it answered."""
        return self._starts

    async def _commit_starts(self, starts: Sequence[Start]) -> list[UUID | Exception]:
        answers: list[UUID | Exception]
        answers, position = await self.in_store(with_position, self.engine, self.engine.start_workflows, starts)
        self._starts.committed_at(position)
        self._stored()
        return answers

    async def command(self, command: cmd.Command) -> None:
        await self.in_store(self.engine.command, command)
        self._stored()

    def _stored(self) -> None:
        self._outbox_wakeup.set()
        self._answers_stored.set()
        self.hooks.wake()
        if self.after_store is not None:
            self.after_store()

    stored = _stored  # public: a caller that writes through `in_store` wakes the outbox and hooks

    # --- inbox -------------------------------------------------------------------------

    async def _inbox_loop(self) -> None:
        # The batch window adapts: a message that came alone means the queues were idle, and
        # waiting `batch_wait_s` for company would only add to every step's latency; after a
        # batch of several, the next is given the window to grow (one commit for more).
        # From the first delivery in hand to the end of the batch's commit, the starts wait for
        # that commit and ride on it (`StartBatcher.hold`): under load a start costs no commit.
        wait = 0.0
        while True:
            try:
                batch = await self.broker.next_batch(self.batch_size, wait, self._starts.hold)
                await self.inbox.handle(batch)
            finally:
                self._starts.release()
            wait = self.batch_wait_s if len(batch) > 1 else 0.0
            if len(batch) < self.batch_size:
                self._drained.set()  # what was queued when it became active is stored

    async def handle_batch(self, batch: Sequence[Delivery]) -> None:
        """Settle every delivery of the batch in one visible place (see `Inbox.handle`)."""
        await self.inbox.handle(batch)

    # --- outbox ------------------------------------------------------------------------

    async def flush_outbox(self) -> int:
        """Publish everything stored and not yet published; return how many orders went."""
        return await self._pump().drain()

    @property
    def outbox_position(self) -> int | None:
        """The outbox's tracked position (None unless active: then the stored one is the truth)."""
        return self._outbox.position if self._outbox is not None and self.active else None

    def _pump(self) -> OutboxPump:
        assert self._outbox is not None and self.active, "start the backend first (only the lease holder publishes)"
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
        self._timeouts += len(commands)
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
