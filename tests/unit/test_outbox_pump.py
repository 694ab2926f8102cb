"""The outbox pump: batches go out while earlier ones await their confirms, and the tracked
position only ever covers batches that are all confirmed, in the order they were read."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from stepflow.adapters.outbox import OutboxPump, OutboxReader
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

    async def __call__(self, orders: list[ev.JobSubmitted], stops: list[StopJob]) -> None:
        self.batches.append([o.job_id for o in orders])
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.confirm.append(confirmed)
        await confirmed


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
    pump = OutboxPump(reader, publish, in_thread, max_in_flight=2)
    for _ in range(3):
        engine.start_workflow(ONE_STEP)
    pumping = asyncio.create_task(pump.pump())
    for _ in range(50):
        await asyncio.sleep(0.01)
    assert len(publish.batches) == 2 and not pumping.done()  # the third waits for the first confirm
    publish.confirm[0].set_result(None)
    for _ in range(50):
        await asyncio.sleep(0.01)
        if len(publish.batches) == 3:
            break
    assert len(publish.batches) == 3
    for confirmed in publish.confirm[1:]:
        confirmed.set_result(None)
    await pumping
    assert await pump.drain() >= 0 and pump.position == engine.max_notification_id()


async def test_a_stop_that_comes_with_a_wake_up_still_ends_the_loop(engine: WorkflowEngine) -> None:
    """Woken and cancelled in the same tick (a backend stopping as it stores): the loop ends.
    With `asyncio.wait_for` on Python 3.11 the cancellation was swallowed and `stop` hung."""
    pump = OutboxPump(OutboxReader(engine), HeldConfirms(), in_thread)
    wakeup = asyncio.Event()
    loop = asyncio.create_task(pump.run(wakeup, poll_s=60))
    await asyncio.sleep(0.05)  # waiting for a wake-up
    wakeup.set()
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(loop, 5)
