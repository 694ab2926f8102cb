"""The clocks of jobs with a timeout (`Deadlines`), and the jobs a starting backend arms: in
flight with a timeout, found from the log, from a low-water mark that moves past everything
finished."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

from stepflow.adapters.deadlines import MARK, Deadlines, Due
from stepflow.engine import commands as cmd
from stepflow.engine import events as ev
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.definitions import build_definition

ONE = build_definition({"identifier": "one", "steps": [{"id": "s", "job_type": "echo", "timeout_s": 5}]})
TWO = build_definition({"identifier": "two", "steps": [{"id": "a", "job_type": "echo", "timeout_s": 5},
                                                       {"id": "b", "job_type": "echo", "timeout_s": 5}]})


def job(engine: WorkflowEngine, workflow_id: UUID, step: str = "s") -> str:
    return engine.workflow_state(workflow_id).steps[step].jobs[0]


def submitted_at(engine: WorkflowEngine, job_id: str) -> int:
    return next(n for n, e in engine.notifications(0, 10_000) if isinstance(e, ev.JobSubmitted) and e.job_id == job_id)


def jobs_in_flight(engine: WorkflowEngine) -> dict[str, tuple[UUID, float]]:
    """What a backend starting now arms."""
    deadlines = Deadlines()
    armed = deadlines.resume(engine, datetime.now(UTC))
    assert armed == len(deadlines)
    return deadlines.armed()


def test_only_jobs_still_in_flight_are_armed_and_the_mark_moves_past_the_rest(tmp_path: Path) -> None:
    engine = WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                                 "SQLITE_DBNAME": str(tmp_path / "store.sqlite")})
    done = engine.start_workflow(ONE)
    engine.command(cmd.RecordCompleted(workflow_id=done, job_id=job(engine, done), cause="c1"))
    stopped = engine.start_workflow(ONE)
    engine.command(cmd.StopWorkflow(workflow_id=stopped))
    failed = engine.start_workflow(TWO)  # "a" fails the workflow; "b" is left running, orphaned
    engine.command(cmd.RecordError(workflow_id=failed, job_id=job(engine, failed, "a"), message="no", cause="e1"))
    stranded = engine.start_workflow(ONE)
    stranded_job = job(engine, stranded)
    assert engine.workflow_state(failed).status == "error"

    assert jobs_in_flight(engine) == {stranded_job: (stranded, 5.0)}
    tracking = engine.factory.tracking_recorder()
    assert tracking.max_tracking_id(MARK) == submitted_at(engine, stranded_job) - 1

    later = engine.start_workflow(ONE)
    assert set(jobs_in_flight(engine)) == {stranded_job, job(engine, later)}  # from the mark, both found
    engine.command(cmd.RecordCompleted(workflow_id=stranded, job_id=stranded_job, cause="c2"))
    engine.command(cmd.RecordCompleted(workflow_id=later, job_id=job(engine, later), cause="c3"))
    assert jobs_in_flight(engine) == {}
    assert tracking.max_tracking_id(MARK) == engine.max_notification_id()  # nothing left behind it


def submitted(job_id: str, timeout_s: float | None, delay_s: float = 0.0) -> ev.JobSubmitted:
    return ev.JobSubmitted(originator_id=uuid4(), originator_version=2, timestamp=datetime.now(UTC), job_id=job_id,
                           step_id="s", index=0, attempt=1, job_type="echo", parameters={},
                           timeout_s=timeout_s, delay_s=delay_s)


def test_a_clock_runs_from_the_order_after_its_delay_and_restarts_on_a_sign_of_life() -> None:
    deadlines, now = Deadlines(), datetime.now(UTC)
    quick, delayed, untimed = submitted("quick", 1.0), submitted("delayed", 1.0, delay_s=5.0), submitted("free", None)
    for order in (quick, delayed, untimed):
        deadlines.arm(order, now)
    assert set(deadlines.armed()) == {"quick", "delayed"}  # no timeout, no clock
    later = now + timedelta(seconds=2)
    assert deadlines.expired(later) == [Due("quick", quick.originator_id)]  # "delayed" is not due yet
    deadlines.touch("quick", later)
    assert deadlines.expired(later + timedelta(seconds=0.5)) == []
    deadlines.touch("free", later)  # a job with no clock stays without one
    deadlines.end("quick")
    assert deadlines.expired(now + timedelta(seconds=7)) == [Due("delayed", delayed.originator_id)]
    assert set(deadlines.armed()) == {"delayed"}
