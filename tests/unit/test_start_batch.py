"""Starts in one transaction (`WorkflowEngine.start_workflows`) and grouped commits (`StartBatcher`)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from uuid import UUID

import pytest
from workflow_story import definition, names, param, step

from stepflow.adapters.persistence import open_engine
from stepflow.adapters.start_batch import StartBatcher
from stepflow.engine import wire
from stepflow.engine.application import Start, WorkflowEngine
from stepflow.engine.definitions import DefinitionError
from stepflow.engine.workflow import Rejected

FLOW = definition(step("a", parameters={"src": "{workflow.source}"}), parameters=(param("source"),))


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[WorkflowEngine]:
    engine = open_engine(f"sqlite:///{tmp_path / 'store.sqlite'}")
    yield engine
    engine.close()


def started(engine: WorkflowEngine) -> list[UUID]:
    return [e.originator_id for _, e in engine.notifications(0, 1000, topics=["WorkflowStarted"])]


def test_many_starts_are_one_transaction_with_their_numbers(sqlite_engine: WorkflowEngine) -> None:
    engine = sqlite_engine
    ids = engine.start_workflows([Start(definition=FLOW, parameters={"source": f"{i}.mov"}, labels=("bulk",),
                                        actor="alice") for i in range(5)])

    assert all(isinstance(i, UUID) for i in ids) and len(set(ids)) == 5
    assert started(engine) == ids
    # the notification log shows one transaction: numbers, then every start with its first job
    kinds = [type(e).__name__ for _, e in engine.notifications(0, 1000)]
    assert sorted(kinds) == sorted(["WorkflowStarted", "JobSubmitted", "WorkflowNumbered"] * 5)
    for workflow_id in ids:
        state = engine.workflow_state(workflow_id)
        assert (state.labels, state.started_by, state.parameters) == (("bulk",), "alice", {"source": state.parameters["source"]})
        assert engine.locate(state.number) == workflow_id  # type: ignore[arg-type]
        job = engine.workflow_state(workflow_id).jobs[state.steps["a"].jobs[0]]
        assert wire.number_of(job.wire_id) == state.number  # type: ignore[arg-type]
    assert len({engine.workflow_state(w).number for w in ids}) == 5


def test_each_start_keeps_its_own_answer(sqlite_engine: WorkflowEngine) -> None:
    engine = sqlite_engine
    taken, retried = uuid.uuid4(), uuid.uuid4()
    engine.start_workflow(FLOW, {"source": "x"}, workflow_id=taken, cause="first")
    engine.start_workflow(FLOW, {"source": "x"}, workflow_id=retried, cause="req-1")
    before = engine.max_notification_id()

    answers = engine.start_workflows([
        Start(definition=FLOW, parameters={"source": "ok.mov"}),
        Start(definition=FLOW, parameters={}),  # bad parameters
        Start(definition=FLOW, parameters={"source": "x"}, workflow_id=taken, cause="another"),  # a clash
        Start(definition=FLOW, parameters={"source": "x"}, workflow_id=retried, cause="req-1"),  # a retry
        Start(definition=FLOW, parameters={"source": "ok2.mov"}),
    ])

    assert isinstance(answers[0], UUID) and isinstance(answers[4], UUID)
    assert isinstance(answers[1], DefinitionError) and answers[1].path == "$.parameters.source"
    assert isinstance(answers[2], Rejected) and f"workflow {taken} already exists" in str(answers[2])
    assert answers[3] == retried
    new = [e.originator_id for _, e in engine.notifications(before, 1000, topics=["WorkflowStarted"])]
    assert new == [answers[0], answers[4]]
    assert names(engine.history(taken)) == ["WorkflowStarted", "JobSubmitted"]  # untouched


def test_the_same_id_twice_in_a_batch_is_a_retry_or_a_clash(memory_engine: WorkflowEngine) -> None:
    workflow_id = uuid.uuid4()
    same = Start(definition=FLOW, parameters={"source": "x"}, workflow_id=workflow_id, cause="c")
    answers = memory_engine.start_workflows([same, same, Start(definition=FLOW, parameters={"source": "x"},
                                                                 workflow_id=workflow_id, cause="d")])
    assert answers[:2] == [workflow_id, workflow_id]
    assert isinstance(answers[2], Rejected)
    assert started(memory_engine) == [workflow_id]


def test_a_taken_workflow_number_draws_another(sqlite_engine: WorkflowEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = sqlite_engine
    engine.start_workflow(FLOW, {"source": "x"})
    taken = engine.workflow_state(started(engine)[0]).number
    draws = iter([taken, taken, 77, 78])  # the batch draws `taken` (a conflict), then one by one
    monkeypatch.setattr(wire, "new_number", lambda: next(draws))

    answers = engine.start_workflows([Start(definition=FLOW, parameters={"source": "y"})])

    (workflow_id,) = answers
    assert isinstance(workflow_id, UUID)
    assert engine.workflow_state(workflow_id).number == 77
    assert engine.locate(77) == workflow_id


# --- the batcher ------------------------------------------------------------------------


class SlowStore:
    """A commit the test holds open, to see who joins the next batch."""

    def __init__(self, engine: WorkflowEngine) -> None:
        self.engine = engine
        self.batches: list[int] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()

    async def commit(self, starts: Sequence[Start]) -> list[UUID | Exception]:
        self.batches.append(len(starts))
        self.entered.set()
        await self.gate.wait()
        return await asyncio.to_thread(self.engine.start_workflows, starts)


async def test_starts_that_arrive_during_a_commit_share_the_next(sqlite_engine: WorkflowEngine) -> None:
    store = SlowStore(sqlite_engine)
    batcher = StartBatcher(store.commit)
    store.gate.clear()
    first = asyncio.create_task(batcher.start(Start(definition=FLOW, parameters={"source": "0"})))
    await store.entered.wait()  # the first start commits at once, alone
    others = [asyncio.create_task(batcher.start(Start(definition=FLOW, parameters={"source": str(i)})))
              for i in range(1, 6)]
    bad = asyncio.create_task(batcher.start(Start(definition=FLOW, parameters={})))
    await asyncio.sleep(0)  # let them queue behind the open commit
    store.gate.set()

    ids = [await first] + [await t for t in others]
    with pytest.raises(DefinitionError):
        await bad
    assert store.batches == [1, 6]
    assert (batcher.batches, batcher.started) == (2, 6)
    assert set(started(sqlite_engine)) == set(ids)


async def test_an_idle_batcher_commits_at_once_and_a_bulk_request_stays_whole(sqlite_engine: WorkflowEngine) -> None:
    store = SlowStore(sqlite_engine)
    batcher = StartBatcher(store.commit, max_batch=4)
    one = await batcher.start(Start(definition=FLOW, parameters={"source": "a"}))
    store.gate.clear()
    store.entered.clear()
    blocker = asyncio.create_task(batcher.start(Start(definition=FLOW, parameters={"source": "b"})))
    await store.entered.wait()
    single = asyncio.create_task(batcher.start(Start(definition=FLOW, parameters={"source": "c"})))
    bulk = asyncio.create_task(batcher.settle([Start(definition=FLOW, parameters={"source": f"d{i}"})
                                               for i in range(6)]))
    await asyncio.sleep(0)
    store.gate.set()
    await blocker
    await single
    answers = await bulk
    assert all(isinstance(a, UUID) for a in answers)
    # 1 alone; 1 alone (idle again); then the single start (it fits) and the bulk of 6 whole,
    # past max_batch, in a batch of its own rather than split across two commits
    assert store.batches == [1, 1, 1, 6]
    assert isinstance(one, UUID)


async def test_a_store_failure_reaches_every_caller_of_the_batch() -> None:
    async def broken(starts: Sequence[Start]) -> list[UUID | Exception]:
        raise OSError("disk full")

    batcher = StartBatcher(broken)
    calls = [batcher.start(Start(definition=FLOW, parameters={"source": str(i)})) for i in range(3)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert [type(r) for r in results] == [OSError] * 3


async def test_a_caller_that_gives_up_does_not_cancel_the_others(sqlite_engine: WorkflowEngine) -> None:
    store = SlowStore(sqlite_engine)
    batcher = StartBatcher(store.commit)
    store.gate.clear()
    gone = asyncio.create_task(batcher.start(Start(definition=FLOW, parameters={"source": "gone"})))
    await store.entered.wait()
    stays = asyncio.create_task(batcher.start(Start(definition=FLOW, parameters={"source": "stays"})))
    gone.cancel()
    await asyncio.sleep(0)
    store.gate.set()
    workflow_id = await stays
    assert gone.cancelled()
    stored = {sqlite_engine.workflow_state(w).parameters["source"] for w in started(sqlite_engine)}
    assert stored == {"gone", "stays"}  # the abandoned start was committed all the same
    assert isinstance(workflow_id, UUID)


async def test_a_held_batcher_waits_for_two_held_commits_at_most(sqlite_engine: WorkflowEngine) -> None:
    """Held, the starts wait for the holder's commits to take them; when two in a row took
    none (an inbox that sees only announcements, say), they are committed apart all the same."""
    store = SlowStore(sqlite_engine)
    batcher = StartBatcher(store.commit)
    batcher.hold()
    start = asyncio.create_task(batcher.start(Start(definition=FLOW, parameters={"source": "x"})))
    for _ in range(2):  # the commit under way, then the next, take nothing
        await asyncio.sleep(0.02)
        assert store.batches == []
        batcher.release()
        batcher.hold()  # the holder's next batch is in hand at once
    workflow_id = await asyncio.wait_for(start, 10)
    assert store.batches == [1] and isinstance(workflow_id, UUID)
    batcher.release()


async def test_a_held_batcher_answers_what_the_holder_took(sqlite_engine: WorkflowEngine) -> None:
    store = SlowStore(sqlite_engine)
    batcher = StartBatcher(store.commit)
    batcher.hold()
    calls = [asyncio.create_task(batcher.start(Start(definition=FLOW, parameters=params)))
             for params in ({"source": "a"}, {})]
    await asyncio.sleep(0)
    riders = batcher.take()
    assert riders is not None and len(riders.starts) == 2
    answers = sqlite_engine.start_workflows(riders.starts)
    riders.answer(answers, 42)
    batcher.release()
    assert isinstance(await calls[0], UUID)
    with pytest.raises(DefinitionError):
        await calls[1]
    assert (store.batches, batcher.ridden, batcher.position) == ([], 2, 42)
    assert batcher.take() is None


async def test_a_start_from_another_event_loop_is_not_held_by_this_ones_holder(sqlite_engine: WorkflowEngine) -> None:
    """A test client (or any caller) on a loop of its own: the holder's commit runs on the
    backend's loop and could not answer it, so its start is committed apart at once."""
    store = SlowStore(sqlite_engine)
    batcher = StartBatcher(store.commit)
    batcher.hold()
    workflow_id = await asyncio.wait_for(asyncio.to_thread(
        asyncio.run, batcher.start(Start(definition=FLOW, parameters={"source": "elsewhere"}))), 10)
    assert isinstance(workflow_id, UUID) and store.batches == [1]
    assert batcher.take() is None
    batcher.release()


async def test_a_start_just_after_a_held_commit_waits_a_window_for_the_next(sqlite_engine: WorkflowEngine) -> None:
    """The inbox was busy a moment ago: its next batch is likely to come within the window, and
    the start rides on it rather than commit alone in the store thread the batch needs."""
    store = SlowStore(sqlite_engine)
    batcher = StartBatcher(store.commit, window_s=5.0)
    batcher.hold()
    batcher.release()
    start = asyncio.create_task(batcher.start(Start(definition=FLOW, parameters={"source": "x"})))
    await asyncio.sleep(0.05)  # time enough to commit alone, were there no window
    batcher.hold()  # the next batch came
    riders = batcher.take()
    assert riders is not None and store.batches == []
    riders.answer(sqlite_engine.start_workflows(riders.starts), 7)
    batcher.release()
    assert isinstance(await asyncio.wait_for(start, 2), UUID)
    assert store.batches == []


async def test_the_window_ends_in_a_commit_of_its_own_and_an_idle_inbox_opens_none(
        sqlite_engine: WorkflowEngine) -> None:
    store = SlowStore(sqlite_engine)
    idle = StartBatcher(store.commit, window_s=5.0)  # never held: no window at all
    assert isinstance(await asyncio.wait_for(idle.start(Start(definition=FLOW, parameters={"source": "a"})), 2), UUID)
    assert store.batches == [1]

    busy = StartBatcher(store.commit, window_s=0.05)
    busy.hold()
    busy.release()
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert isinstance(await asyncio.wait_for(busy.start(Start(definition=FLOW, parameters={"source": "b"})), 2), UUID)
    assert store.batches == [1, 1] and loop.time() - began >= 0.04  # no batch came: alone, after the window


async def test_a_flusher_cancelled_while_held_answers_its_callers(sqlite_engine: WorkflowEngine) -> None:
    store = SlowStore(sqlite_engine)
    batcher = StartBatcher(store.commit)
    batcher.hold()
    start = asyncio.create_task(batcher.start(Start(definition=FLOW, parameters={"source": "x"})))
    await asyncio.sleep(0.02)  # the flusher waits for the holder
    assert batcher._flusher is not None
    batcher._flusher.cancel()
    with pytest.raises(RuntimeError, match="shutting down"):
        await asyncio.wait_for(start, 2)
    assert store.batches == []
