"""`LogFollower`: reads the log after its position (its topics only), records the position in
the store's tracking table, and carries on from its own when another process is ahead."""

from __future__ import annotations

from pathlib import Path

import pytest

from stepflow.engine import commands as cmd
from stepflow.engine import events as ev
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.definitions import build_definition
from stepflow.engine.follower import LogFollower

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
