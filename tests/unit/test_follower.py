"""`LogFollower`: reads the log after its position (its topics only), records the position in
the store's tracking table, and carries on from its own when another process is ahead; or,
as the projections use it, reads with a reader of its own and keeps the position in a view
store, in the caller's transaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from stepflow.engine import commands as cmd
from stepflow.engine import events as ev
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.definitions import build_definition
from stepflow.engine.follower import LogFollower
from stepflow.projections.sqlite import SQLiteViewStore
from stepflow.projections.store import PositionMoved, Table

ONE = build_definition({"identifier": "one", "steps": [{"id": "s", "job_type": "echo"}]})


@pytest.fixture
def engine(tmp_path: Path) -> WorkflowEngine:
    return WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                               "SQLITE_DBNAME": str(tmp_path / "store.sqlite")})


def test_reads_its_topics_after_its_position_and_resumes_from_the_store(engine: WorkflowEngine) -> None:
    first = engine.start_workflow(ONE)
    follower = LogFollower(engine, "t", ("JobSubmitted",), batch_size=10)
    items = follower.read()
    assert [type(e) for _, e in items] == [ev.JobSubmitted] and items[0][1].originator_id == first
    follower.record(items[-1][0])
    second = engine.start_workflow(ONE)
    again = LogFollower(engine, "t", ("JobSubmitted",))  # a restart
    assert again.position == items[-1][0]
    assert [e.originator_id for _, e in again.read()] == [second]
    assert again.read(0, limit=1) == items[:1]  # any position may be read from


def test_the_position_only_moves_forward_and_another_process_ahead_is_no_error(engine: WorkflowEngine) -> None:
    for _ in range(3):
        engine.start_workflow(ONE)
    end = engine.max_notification_id()
    ours, theirs = LogFollower(engine, "t"), LogFollower(engine, "t")
    theirs.record(end)
    ours.record(end - 1)  # the store already holds a later position: ours carries on
    assert ours.position == end - 1
    ours.record(end - 2)  # never back
    assert ours.position == end - 1
    assert LogFollower(engine, "t").position == end


def test_a_new_follower_may_start_at_the_end_of_the_log(engine: WorkflowEngine) -> None:
    workflow_id = engine.start_workflow(ONE)
    engine.command(cmd.StopWorkflow(workflow_id=workflow_id))
    end = engine.max_notification_id()
    assert LogFollower(engine, "fresh").position == 0
    late = LogFollower(engine, "late", new_at_end=True)
    assert late.position == end and late.read() == []
    assert LogFollower(engine, "late", new_at_end=True).position == end  # recorded, not re-derived
    assert LogFollower(WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}), "e",
                       new_at_end=True).position == 0  # an empty log: nothing to skip


class _View:
    name = "v"
    schema_version = 1
    tables = (Table("t_rows", (("n", "int"),), key=("n",)),)


def test_a_reader_and_a_position_store_of_ones_own(engine: WorkflowEngine, tmp_path: Path) -> None:
    """The projections' way: every event through a reader of theirs, the position in the view
    store, moved in the transaction that writes the rows."""
    for _ in range(3):
        engine.start_workflow(ONE)
    end = engine.max_notification_id()
    store = SQLiteViewStore(str(tmp_path / "views.sqlite"))
    store.ensure(_View)
    reads: list[tuple[int, int]] = []

    def reader(after: int, limit: int) -> list[tuple[int, ev.Event]]:
        reads.append((after, limit))
        return engine.notifications(after, limit)

    follower = LogFollower(engine, "v", reader=reader, positions=store, batch_size=4)
    assert follower.position == 0
    assert [i for i, _ in follower.read(stop=2)] == [1, 2] and reads[-1] == (0, 2)  # no more than (0, 2] holds
    assert [i for i, _ in follower.read()] == [1, 2, 3, 4] and reads[-1] == (0, 4)

    def rows() -> list[tuple[int, ...]]:
        with store.read() as tx:
            return tx.query("SELECT n FROM t_rows")

    with pytest.raises(RuntimeError), follower.advance(2) as tx:
        tx.execute("INSERT INTO t_rows VALUES (?)", (1,))
        raise RuntimeError("the body failed: neither the row nor the position")
    assert follower.position == store.position("v") == 0 and rows() == []
    with follower.advance(2) as tx:
        tx.execute("INSERT INTO t_rows VALUES (?)", (1,))
    assert follower.position == store.position("v") == 2 and rows() == [(1,)]

    with store.advance("v", 2, end):  # another runner got further
        pass
    with pytest.raises(PositionMoved), follower.advance(3):
        pass
    assert follower.position == 2 and store.position("v") == end
    follower.reload()
    assert follower.position == end and follower.read() == []
    follower.reload(1)  # a position the caller read from the store with others'
    assert follower.position == 1
    store.close()


def test_topics_belong_to_the_default_reader(engine: WorkflowEngine) -> None:
    with pytest.raises(ValueError):
        LogFollower(engine, "t", ("JobSubmitted",), reader=engine.notifications)
