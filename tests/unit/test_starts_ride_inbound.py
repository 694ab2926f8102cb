"""Starts that ride on the inbox's commit: under load a start costs no transaction of its own.

Over the in-process broker and a real Backend. The store thread is held shut by the test, so
that a completion's commit is under way (or queued) while a start comes: the start must then
be stored in the next inbound commit, answered with its id after it, and never lost or stored
twice, also when that commit fails and its starts go back to be committed apart.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any
from uuid import UUID

import pytest
from amqp_fixtures import eventually
from eventsourcing.persistence import Recording

from stepflow.adapters import protocol as p
from stepflow.adapters.backend import Backend, default_backend
from stepflow.adapters.memory.broker import MemoryBroker, MemoryDelivery
from stepflow.engine import commands as cmd
from stepflow.engine import wire
from stepflow.engine.application import Start, WorkflowEngine
from stepflow.engine.definitions import build_definition

POISON = "explode"
FAN = build_definition({"identifier": "fan", "parameters": [{"id": "items", "type": "array_of_strings",
                                                            "default": ["0", "1", "2"]}],
                        "steps": [{"id": "only", "job_type": "nobody", "fan_out": "{workflow.items}"}]})
OTHER = build_definition({"identifier": "other", "steps": [{"id": "s", "job_type": "nobody"}]})


class BuggyEngine(WorkflowEngine):
    """Applying one particular completion raises (a bug not found yet)."""

    def _run(self, command: cmd.Command, touched: Any, loaded: Any) -> cmd.Outcome:
        if isinstance(command, cmd.RecordCompleted) and command.outputs.get("out") == POISON:
            raise KeyError("a bug in the engine")
        return super()._run(command, touched, loaded)


class Shop:
    """The backend, its broker, and every commit it made (the kinds of events in each)."""

    def __init__(self) -> None:
        self.engine = BuggyEngine(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
        self.broker = MemoryBroker()
        self.broker.bindings["nobody"] = "nobody"  # orders wait on a queue no worker reads
        self.backend: Backend = default_backend(self.engine, self.broker.backend(), outbox_poll_s=0.05,
                                                timeout_check_s=0.05)
        self.commits: list[list[str]] = []
        told = self.engine.on_saved
        assert told is not None

        def saved(recordings: list[Recording[UUID]]) -> None:
            self.commits.append([type(r.domain_event).__name__ for r in recordings])
            told(recordings)

        self.engine.on_saved = saved
        self.gate = threading.Event()

    async def shut_store(self) -> asyncio.Task[Any]:
        """Until `gate` is set, the store thread runs nothing else."""
        self.gate.clear()
        return asyncio.create_task(self.backend.in_store(self.gate.wait))

    def deliver(self, job_id: str, workflow_id: UUID, out: str = "ok") -> None:
        body = p.encoder.encode(p.JobResult(job_id=job_id, status="completed",
                                            parameters=[p.Parameter(id="out", value=out)]))
        self.broker.queue(p.JOB_COMPLETED).put(MemoryDelivery(
            queue=p.JOB_COMPLETED, body=body, message_id=f"m-{job_id}", headers={"workflow_id": str(workflow_id)}))

    def taken(self) -> bool:
        return not len(self.broker.queue(p.JOB_COMPLETED))

    def settled(self) -> bool:
        return self.taken() and not self.broker._unacked


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    shop = Shop()
    await shop.backend.start()
    try:
        yield shop
    finally:
        shop.gate.set()
        await shop.backend.stop()


async def _first_completion_in_commit(shop: Shop) -> tuple[UUID, list[str], asyncio.Task[Any]]:
    """A workflow of three jobs, the store shut, and the first job's completion taken by the
    inbox (its commit waits for the store): the inbox holds its batch."""
    workflow_id = await shop.backend.start_workflow(FAN)
    jobs = list(shop.engine.workflow_state(workflow_id).jobs)
    blocker = await shop.shut_store()
    shop.deliver(jobs[0], workflow_id)
    await shop.broker._notify()
    await eventually(shop.taken, what="the inbox to take the first completion (its commit waits)")
    return workflow_id, jobs, blocker


async def test_a_start_made_during_an_inbound_commit_rides_on_the_next(shop: Shop) -> None:
    workflow_id, jobs, blocker = await _first_completion_in_commit(shop)
    start = asyncio.create_task(shop.backend.start_workflow(OTHER, actor="alice"))
    shop.deliver(jobs[1], workflow_id)  # waits on the broker for the next inbound batch
    before = len(shop.commits)
    shop.gate.set()
    await blocker
    started = await start
    await shop.broker._notify()
    await eventually(shop.settled, what="both completions settled")

    commits = shop.commits[before:]
    assert sorted(commits[0]) == ["JobCompleted"]
    assert sorted(commits[1]) == ["JobCompleted", "JobSubmitted", "WorkflowNumbered", "WorkflowStarted"]
    assert len(commits) == 2  # no commit of the start's own
    assert shop.backend.starts.ridden == 1
    state = shop.engine.workflow_state(started)
    assert (state.started_by, state.definition.identifier) == ("alice", "other")
    statuses = {j.job_id: j.status for j in shop.engine.workflow_state(workflow_id).jobs.values()}
    assert [statuses[j] for j in jobs] == ["completed", "completed", "queued"]
    # the log position the start was answered with includes it (an HTTP reader's `?after=`)
    assert shop.backend.starts.position >= max(n for n, e in shop.engine.notifications(0, 1000)
                                               if e.originator_id == started)


async def test_a_start_whose_ride_raises_is_committed_apart_and_the_poison_quarantined(shop: Shop) -> None:
    workflow_id, jobs, blocker = await _first_completion_in_commit(shop)
    start = asyncio.create_task(shop.backend.start_workflow(OTHER))
    shop.deliver(jobs[1], workflow_id, out=POISON)
    shop.deliver(jobs[2], workflow_id)
    shop.gate.set()
    await blocker
    started = await start
    await shop.broker._notify()
    await eventually(shop.settled, what="every completion settled")

    assert shop.engine.workflow_state(started).status == "running"
    (quarantined,) = [delivery for delivery, _ in shop.broker.quarantined]
    assert quarantined.message_id == f"m-{jobs[1]}"
    starts = [e for _, e in shop.engine.notifications(0, 1000, topics=["WorkflowStarted"])]
    assert [e.originator_id for e in starts] == [workflow_id, started]  # stored once
    assert shop.backend.starts.ridden == 0
    statuses = {j.job_id: j.status for j in shop.engine.workflow_state(workflow_id).jobs.values()}
    assert [statuses[j] for j in jobs] == ["completed", "queued", "completed"]
    assert shop.backend.check() is None


async def test_an_idle_inbox_holds_no_start_back(shop: Shop) -> None:
    commits = len(shop.commits)
    ids = await asyncio.gather(*(shop.backend.start_workflow(OTHER) for _ in range(3)))
    assert len(set(ids)) == 3
    assert shop.backend.starts.ridden == 0
    assert 1 <= len(shop.commits) - commits <= 2  # grouped by the batcher on its own


# --- the engine's half: one transaction ---------------------------------------------------


def _sequence(engine: WorkflowEngine) -> list[list[str]]:
    commits: list[list[str]] = []
    engine.on_saved = lambda recordings: commits.append(sorted(type(r.domain_event).__name__ for r in recordings))
    return commits


def _completion(engine: WorkflowEngine, workflow_id: UUID) -> cmd.RecordCompleted:
    job_id = next(iter(engine.workflow_state(workflow_id).jobs))
    return cmd.RecordCompleted(workflow_id=workflow_id, job_id=job_id, outputs={"out": "ok"}, cause="c-1")


def test_execute_and_start_is_one_transaction(memory_engine: WorkflowEngine) -> None:
    first = memory_engine.start_workflow(OTHER)
    commits = _sequence(memory_engine)
    outcomes, answers = memory_engine.execute_and_start(
        [_completion(memory_engine, first)],
        [Start(definition=OTHER, parameters={}), Start(definition=FAN, parameters={"items": 3})])

    assert [o.ok for o in outcomes] == [True]
    assert isinstance(answers[0], UUID) and isinstance(answers[1], Exception)  # bad parameters: its own answer
    assert commits == [sorted(["JobCompleted", "StepCompleted", "WorkflowCompleted", "WorkflowStarted",
                               "WorkflowNumbered", "JobSubmitted"])]
    assert memory_engine.workflow_state(first).status == "completed"
    assert memory_engine.locate(memory_engine.workflow_state(answers[0]).number) == answers[0]  # type: ignore[arg-type]


def test_execute_and_start_sorts_out_a_conflict_apart(memory_engine: WorkflowEngine,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    first = memory_engine.start_workflow(OTHER)
    taken = memory_engine.workflow_state(first).number
    draws: Sequence[int] = [taken, taken, 77]  # the shared commit clashes; apart, the start draws again
    numbers = iter(draws)
    monkeypatch.setattr(wire, "new_number", lambda: next(numbers))
    commits = _sequence(memory_engine)

    outcomes, (started,) = memory_engine.execute_and_start([_completion(memory_engine, first)],
                                                           [Start(definition=OTHER, parameters={})])

    assert [o.ok for o in outcomes] == [True] and isinstance(started, UUID)
    assert memory_engine.workflow_state(started).number == 77
    assert len(commits) == 2  # the commands, then the start
    assert memory_engine.workflow_state(first).status == "completed"
    assert started != first
