"""The backend under a lease, in memory: a standby runs none of the active parts, and a
backend that becomes active does not republish orders a worker already took."""

from __future__ import annotations

import asyncio
from typing import Any

from stepflow.adapters.backend import default_backend
from stepflow.adapters.memory.broker import MemoryBroker
from stepflow.adapters.takeover import reached_since
from stepflow.engine import commands as cmd
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.definitions import build_definition


class NeverHeld:
    """Another process holds the lease, for as long as this test runs."""

    name = "held elsewhere"

    def __init__(self) -> None:
        self.on_wake: Any = None
        self.tries = 0

    async def try_acquire(self) -> bool:
        self.tries += 1
        return False

    async def watch(self) -> None:
        raise AssertionError("never held, never watched")

    async def close(self) -> None:
        return None


def one_step() -> Any:
    return build_definition({"identifier": "lease-unit", "steps": [{"id": "only", "job_type": "echo"}]})


def engine() -> WorkflowEngine:
    return WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


async def test_a_standby_stores_commands_and_publishes_nothing() -> None:
    store, broker = engine(), MemoryBroker()
    lease = NeverHeld()
    backend = default_backend(store, broker.backend(), lease=lease, lease_poll_s=0.01)
    await backend.start()
    try:
        workflow_id = await backend.start_workflow(one_step(), {})
        while lease.tries < 5:  # the lease loop keeps trying meanwhile
            await asyncio.sleep(0.01)
        assert not backend.active and not backend.running and backend.outbox_position is None
        assert backend.stats["orders"] == 0
        assert store.workflow_state(workflow_id).jobs  # stored: the holder will publish it
        backend.check()
    finally:
        await backend.stop()


async def test_orders_whose_job_a_worker_already_took_are_not_republished() -> None:
    store, broker = engine(), MemoryBroker()
    done = store.start_workflow(one_step(), {})
    waiting = store.start_workflow(one_step(), {})
    (job_id,) = store.workflow_state(done).jobs
    store.execute([cmd.RecordCompleted(workflow_id=done, job_id=job_id, cause="answer-1")])
    assert reached_since(store, 0) == {job_id}
    backend = default_backend(store, broker.backend())  # the outbox starts at 0: both orders unpublished
    await backend.start()
    try:
        await backend.flush_outbox()
        assert backend.stats["orders"] == 1  # only the waiting workflow's
        assert store.workflow_state(waiting).jobs
    finally:
        await backend.stop()


async def test_held_orders_wait_while_the_workers_still_answer_and_go_once_they_are_quiet() -> None:
    """After a take-over, orders of the window that no worker answered yet are held back:
    while anything is still being stored (the workers work through a backlog, where the held
    orders may wait behind later steps') none goes out again; once nothing was stored for the
    quiet spell, those still unheard of do."""
    from stepflow.adapters.takeover import Window

    store = engine()
    position = store.max_notification_id()
    first, second = store.start_workflow(one_step()), store.start_workflow(one_step())
    orders = {w: store.load(w).state.current_jobs("only")[0] for w in (first, second)}
    window = Window(store, position)
    held = [e for e in store.events.get(first) if type(e).__name__ == "JobSubmitted"]
    held += [e for e in store.events.get(second) if type(e).__name__ == "JobSubmitted"]
    stored = asyncio.Event()

    async def in_thread(fn: Any, *args: Any) -> Any:
        return fn(*args)

    async def busy_workers() -> None:
        for i in range(12):  # 0.6 s of answers to other jobs, then one of the held is answered
            await asyncio.sleep(0.05)
            if i == 10:
                store.command(cmd.RecordCompleted(workflow_id=first, job_id=orders[first].job_id))
            stored.set()

    loop = asyncio.get_running_loop()
    began = loop.time()
    answering = asyncio.create_task(busy_workers())
    unheard = await window.unheard_of(held, in_thread, stored, quiet_s=0.3, grace_s=5)
    await answering
    assert loop.time() - began >= 0.6 + 0.3  # not while the workers answered: after, once quiet
    assert [o.job_id for o in unheard] == [orders[second].job_id]
