"""The outbox pump: batches go out while earlier ones await their confirms, and the tracked
position only ever covers batches that are all confirmed, in the order they were read."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from stepflow.adapters.alone import Alone
from stepflow.adapters.outbox import JustStored, OutboxPump, OutboxReader
from stepflow.engine import commands as cmd
from stepflow.engine import events as ev
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.definitions import build_definition
from stepflow.engine.ports import StopJob

ONE_STEP = build_definition({"identifier": "t", "steps": [{"id": "only", "job_type": "echo"}]})


class HeldConfirms:
    """A publish whose confirms the test releases, batch by batch."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.confirm: list[asyncio.Future[None]] = []
        self._arrived = asyncio.Condition()

    async def __call__(self, orders: list[ev.JobSubmitted], stops: list[StopJob]) -> None:
        self.batches.append([o.job_id for o in orders])
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.confirm.append(confirmed)
        async with self._arrived:
            self._arrived.notify_all()
        await confirmed

    async def published(self, count: int) -> None:
        """Return once `count` batches were handed to the broker."""
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.batches) >= count), 5)


async def in_thread(fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


@pytest.fixture
def engine(tmp_path: Path) -> WorkflowEngine:
    return WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                               "SQLITE_DBNAME": str(tmp_path / "store.sqlite")})


async def test_a_batch_is_published_before_the_previous_one_is_confirmed(engine: WorkflowEngine) -> None:
    publish = HeldConfirms()
    pump = OutboxPump(OutboxReader(engine), publish, in_thread)
    first = engine.start_workflow(ONE_STEP)
    await pump.pump()
    second = engine.start_workflow(ONE_STEP)
    await pump.pump()
    jobs = [next(iter(engine.workflow_state(w).jobs)) for w in (first, second)]
    assert publish.batches == [[jobs[0]], [jobs[1]]]  # the second went out with the first unconfirmed
    assert pump.position == 0

    publish.confirm[1].set_result(None)  # confirms out of order: nothing may be skipped
    await asyncio.sleep(0)
    await pump.pump()
    assert pump.position == 0 and OutboxReader(engine).position == 0

    publish.confirm[0].set_result(None)
    await asyncio.sleep(0)
    assert await pump.pump() == 2
    assert pump.position == engine.max_notification_id()
    assert OutboxReader(engine).position == pump.position  # tracked in the store, not only in memory
    assert len(publish.batches) == 2  # nothing published twice


async def test_a_failed_publish_stops_the_pump_without_advancing(engine: WorkflowEngine) -> None:
    async def refused(orders: list[ev.JobSubmitted], stops: list[StopJob]) -> None:
        raise RuntimeError("broker refused")

    pump = OutboxPump(OutboxReader(engine), refused, in_thread)
    engine.start_workflow(ONE_STEP)
    with pytest.raises(RuntimeError, match="broker refused"):
        await pump.drain()
    assert OutboxReader(engine).position == 0  # a restart publishes it again


async def test_in_flight_batches_are_bounded(engine: WorkflowEngine) -> None:
    publish = HeldConfirms()
    reader = OutboxReader(engine, batch_size=1)
    reads: list[int] = []

    async def reading(fn: Any, *args: Any) -> Any:
        if fn == reader.next_batch:
            reads.append(args[0])  # asked for synchronously, as the pump's step reaches the read
        return await in_thread(fn, *args)

    pump = OutboxPump(reader, publish, reading, max_in_flight=2)
    for _ in range(3):
        engine.start_workflow(ONE_STEP)
    pumping = asyncio.create_task(pump.pump())
    await publish.published(2)
    # The pump published the second batch, then awaited the first one's confirm before it
    # read on: the third is not even read until that confirm comes.
    assert len(reads) == 2 and len(publish.batches) == 2 and not pumping.done()
    assert pump.position == 0
    publish.confirm[0].set_result(None)
    await publish.published(3)
    assert len(publish.batches) == 3
    for confirmed in publish.confirm[1:]:
        confirmed.set_result(None)
    assert await asyncio.wait_for(pumping, 5) == 3  # every order confirmed, by this one call
    assert pump.position == engine.max_notification_id()
    assert await pump.drain() == 0  # nothing left to publish or to settle
    assert len(publish.batches) == 3  # nothing published twice


async def test_a_stop_that_comes_with_a_wake_up_still_ends_the_loop(engine: WorkflowEngine) -> None:
    """Woken and cancelled in the same tick (a backend stopping as it stores): the loop ends.
    With `asyncio.wait_for` on Python 3.11 the cancellation was swallowed and `stop` hung."""
    pump = OutboxPump(OutboxReader(engine), HeldConfirms(), in_thread)
    wakeup = asyncio.Event()
    loop = asyncio.create_task(pump.run(wakeup, poll_s=60))
    await asyncio.sleep(0)  # one turn of the loop: the task runs to its wait for a wake-up
    assert not loop.done()
    wakeup.set()
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(loop, 5)


class Reads:
    """`in_thread` that counts the pump's reads of the log."""

    def __init__(self, reader: OutboxReader) -> None:
        self.reader = reader
        self.reads = 0

    async def __call__(self, fn: Any, *args: Any) -> Any:
        if fn == self.reader.next_batch:
            self.reads += 1
        return await in_thread(fn, *args)


class Published:
    def __init__(self) -> None:
        self.orders: list[str] = []
        self.stops: list[StopJob] = []

    async def __call__(self, orders: list[ev.JobSubmitted], stops: list[StopJob]) -> None:
        self.orders.extend(o.job_id for o in orders)
        self.stops.extend(stops)


def _memory_pump(engine: WorkflowEngine) -> tuple[OutboxPump, Reads, Published]:
    stored = JustStored()
    engine.on_saved = stored
    reader = OutboxReader(engine)
    reads, published = Reads(reader), Published()
    return OutboxPump(reader, published, reads, stored=stored), reads, published


def _job(engine: WorkflowEngine, workflow_id: Any) -> str:
    return next(iter(engine.workflow_state(workflow_id).jobs))


async def test_a_commit_that_follows_on_goes_out_from_memory_without_reading_the_log(engine: WorkflowEngine) -> None:
    pump, reads, published = _memory_pump(engine)
    first = engine.start_workflow(ONE_STEP)
    await pump.drain()  # the first pump reads the log too: what came before this process is there
    assert reads.reads == 1 and published.orders == [_job(engine, first)]
    from_memory = pump.from_memory
    second = engine.start_workflow(ONE_STEP)
    third = engine.start_workflow(ONE_STEP)
    assert await pump.drain() == 2
    assert reads.reads == 1 and pump.from_memory == from_memory + 2  # no read: both commits followed on
    assert published.orders == [_job(engine, w) for w in (first, second, third)]
    assert OutboxReader(engine).position == engine.max_notification_id()  # tracked all the same


async def test_a_commit_after_another_writers_is_read_from_the_log_in_order(engine: WorkflowEngine,
                                                                          tmp_path: Path) -> None:
    pump, reads, published = _memory_pump(engine)
    await pump.drain()
    other = WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                                "SQLITE_DBNAME": str(tmp_path / "store.sqlite")})  # another process, say
    theirs = other.start_workflow(ONE_STEP)
    ours = engine.start_workflow(ONE_STEP)  # its first id is not the next one: a gap
    reads_before, from_memory = reads.reads, pump.from_memory
    await pump.drain()
    assert pump.from_memory == from_memory  # neither commit went from memory
    assert reads.reads > reads_before
    assert published.orders == [_job(engine, theirs), _job(engine, ours)]  # once each, in log order
    again = engine.start_workflow(ONE_STEP)  # follows on again
    await pump.drain()
    assert pump.from_memory == from_memory + 1 and published.orders[-1] == _job(engine, again)
    assert len(published.orders) == len(set(published.orders)) == 3


async def test_a_commit_that_stops_jobs_is_read_from_the_log(engine: WorkflowEngine) -> None:
    """The stop needs the job's instance and wire id, which the store has: read, not memory."""
    pump, reads, published = _memory_pump(engine)
    workflow_id = engine.start_workflow(ONE_STEP)
    await pump.drain()
    reads_before = reads.reads
    engine.command(cmd.StopWorkflow(workflow_id=workflow_id, cause="stop-1"))
    await pump.drain()
    assert reads.reads > reads_before
    job = engine.workflow_state(workflow_id).jobs[_job(engine, workflow_id)]
    assert [(s.job_id, s.wire_id) for s in published.stops] == [(job.job_id, job.wire_id)]


def test_just_stored_takes_only_what_follows_on() -> None:
    stored = JustStored(bound=2)
    stored.commits.extend([(3, 5, []), (6, 6, None)])
    assert stored.take(1) is None  # 2 is missing: read the log
    assert stored.take(2) == (5, [])
    assert stored.take(5) is None and stored.waiting()  # a stop: read the log
    stored.commits.append((7, 9, []))
    stored.commits.append((10, 10, []))  # bounded: the stop's entry went, a gap the log fills
    assert stored.take(5) is None
    assert stored.take(6) == (9, []) and stored.take(9) == (10, []) and not stored.waiting()


async def test_rounds_within_the_interval_share_one_position_write(engine: WorkflowEngine) -> None:
    """Every round of publishing used to end in a write (a commit and a sync, on the store the
    inbound batches commit to): now the rounds of one interval share one, which still comes."""
    stored = JustStored()
    engine.on_saved = stored
    published = Published()
    pump = OutboxPump(OutboxReader(engine), published, in_thread, stored=stored, position_every_s=0.3)
    wakeup = asyncio.Event()
    running = asyncio.create_task(pump.run(wakeup, poll_s=60))
    try:
        for i in range(6):  # one round each, as when the inbound batches trickle in
            engine.start_workflow(ONE_STEP)
            wakeup.set()
            async with asyncio.timeout(5):
                while len(published.orders) <= i:
                    await asyncio.sleep(0.001)
        async with asyncio.timeout(5):
            while OutboxReader(engine).position < engine.max_notification_id():
                await asyncio.sleep(0.01)
        assert pump.position_writes <= 2, pump.position_writes  # the first round's, then one for the rest
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running


async def test_nothing_of_the_outbox_runs_while_a_redelivered_message_is_applied_alone(
        engine: WorkflowEngine) -> None:
    """The crash-loop breaker blames a death on the message applied alone: `alone` waits until
    a publish under way is confirmed, and no round publishes until it ends. A task cancelled
    before it ran gives its share back (or every later `alone` would wait in vain)."""
    publish = HeldConfirms()
    alone = Alone(wait_s=5)
    pump = OutboxPump(OutboxReader(engine), publish, in_thread, alone=alone)
    first = engine.start_workflow(ONE_STEP)
    await pump.pump()
    assert len(publish.batches) == 1  # in flight, unconfirmed
    entered = asyncio.Event()
    release = asyncio.Event()

    async def suspect() -> None:
        async with alone.alone():
            entered.set()
            await release.wait()

    applying = asyncio.create_task(suspect())
    await asyncio.sleep(0.05)
    assert not entered.is_set()  # the publish under way holds it off
    publish.confirm[0].set_result(None)
    await asyncio.wait_for(entered.wait(), 5)
    engine.start_workflow(ONE_STEP)
    pumping = asyncio.create_task(pump.pump())
    await asyncio.sleep(0.05)
    assert len(publish.batches) == 1 and not pumping.done()  # no round while it is alone
    release.set()
    await applying
    await publish.published(2)
    publish.confirm[1].set_result(None)
    assert await asyncio.wait_for(pumping, 5) >= 1  # the first batch, at least, settled by it
    # Its own batch's confirm may come after that round settled what it found confirmed: the
    # next settles it (as the pump's loop would).
    await asyncio.wait_for(pump.drain(), 5)
    assert pump.position == engine.max_notification_id()
    assert [next(iter(engine.workflow_state(first).jobs))] == publish.batches[0]

    engine.start_workflow(ONE_STEP)
    await pump.pump()
    pump.cancel()  # a stop: the task in flight never confirms
    await asyncio.sleep(0)
    async with asyncio.timeout(1):
        async with alone.alone():
            pass


async def test_alone_goes_on_after_its_wait_when_shared_work_never_ends() -> None:
    """A broker that holds back a confirm for good must not stop the inbox as well."""
    alone = Alone(wait_s=0.05)
    await alone.enter()  # never left
    async with asyncio.timeout(2), alone.alone():
        pass


async def test_shared_work_that_only_waits_steps_aside_and_takes_turns() -> None:
    """A publish held back after a take-over waits for the workers to go quiet, and they
    answer through the inbox: it must not hold the inbox's `alone` meanwhile. And suspects
    applied back to back let the shared work that waited for one of them go between."""
    alone = Alone(wait_s=5)
    released = asyncio.Event()
    order: list[str] = []

    async def held_publish() -> None:
        async with alone.shared():
            async with alone.aside():
                await released.wait()
            order.append("published")

    holder = asyncio.create_task(held_publish())
    await asyncio.sleep(0)
    async with asyncio.timeout(1), alone.alone():  # not held up by the waiting publish
        released.set()
        await asyncio.sleep(0.01)
        assert order == []  # it takes its share back only once nobody is alone
        order.append("suspect 1")
    async with asyncio.timeout(1), alone.alone():
        order.append("suspect 2")
    await asyncio.wait_for(holder, 1)
    assert order == ["suspect 1", "published", "suspect 2"]
