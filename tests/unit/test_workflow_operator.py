"""The Workflow aggregate under an operator's orders: retry a job, pause, resume, stop, delete."""

from __future__ import annotations

import pytest
from workflow_story import (
    WORKFLOW_ID,
    at,
    complete,
    definition,
    fail,
    job,
    names,
    of_type,
    start,
    step,
)

from stepflow.engine import events as ev
from stepflow.engine.decisions import job_id_for
from stepflow.engine.workflow import Rejected

ONE_TRY = definition(step("a"), step("b", parents=["a"]))
TWO_TRIES = definition(step("a", retry={"max_attempts": 2}), step("b", parents=["a"]))


# --- retry_job ----------------------------------------------------------------------------


def test_retrying_an_errored_job_reopens_a_failed_workflow() -> None:
    workflow, _ = start(ONE_TRY)
    first = job(workflow, "a")
    assert names(fail(workflow, "a", now=at(1))) == ["JobErrored", "StepFailed", "WorkflowFailed"]

    workflow.retry_job(first, now=at(60), actor="ops", cause="api-7")
    events = workflow.collect_events()

    assert names(events) == ["JobRetryRequested", "JobRetryScheduled", "JobSubmitted"]
    requested, scheduled, submitted = events
    assert (requested.job_id, requested.actor, requested.cause) == (first, "ops", "api-7")
    second = job_id_for(WORKFLOW_ID, "a", 0, 2)
    assert (scheduled.job_id, scheduled.next_job_id, scheduled.attempt, scheduled.delay_s) == (first, second, 2, 0.0)
    assert (submitted.job_id, submitted.attempt, submitted.delay_s) == (second, 2, 0.0)
    assert (workflow.state.status, workflow.state.reason, workflow.state.ended_at) == ("running", None, None)
    assert workflow.state.steps["a"].status == "processing" and workflow.state.steps["a"].reason is None

    assert names(complete(workflow, "a")) == ["JobCompleted", "StepCompleted", "JobSubmitted"]
    assert names(complete(workflow, "b")) == ["JobCompleted", "StepCompleted", "WorkflowCompleted"]


def test_retrying_an_unroutable_job_submits_it_again() -> None:
    workflow, _ = start(ONE_TRY)
    first = job(workflow, "a")
    workflow.record_unroutable(first, "job_a", now=at(1))
    workflow.collect_events()
    workflow.retry_job(first, now=at(2))
    assert names(workflow.collect_events()) == ["JobRetryRequested", "JobRetryScheduled", "JobSubmitted"]
    assert job(workflow, "a") != first


def test_only_the_latest_attempt_can_be_retried() -> None:
    workflow, _ = start(TWO_TRIES)
    first = job(workflow, "a")
    fail(workflow, "a")
    fail(workflow, "a")
    assert workflow.state.status == "error"
    with pytest.raises(Rejected, match=f"job {first} was already retried; retry its latest attempt"):
        workflow.retry_job(first, now=at(5))
    assert workflow.collect_events() == []


@pytest.mark.parametrize("finish", ["none", "completed"])
def test_a_job_that_did_not_fail_cannot_be_retried(finish: str) -> None:
    workflow, _ = start(ONE_TRY)
    job_id = job(workflow, "a")
    if finish == "completed":
        complete(workflow, "a")
    status = workflow.state.jobs[job_id].status
    with pytest.raises(Rejected, match=f"job {job_id} is {status}; only an errored, stopped or unroutable"):
        workflow.retry_job(job_id, now=at(5))
    assert workflow.collect_events() == []


def test_a_job_of_a_stopped_workflow_cannot_be_retried() -> None:
    workflow, _ = start(ONE_TRY)
    workflow.stop(now=at(1))
    workflow.collect_events()
    with pytest.raises(Rejected, match="workflow is stopped"):
        workflow.retry_job(job(workflow, "a"), now=at(2))


def test_a_failed_workflow_cannot_be_paused_but_its_job_can_be_retried() -> None:
    workflow, _ = start(ONE_TRY)
    fail(workflow, "a")
    with pytest.raises(Rejected, match="cannot pause a workflow that is error"):
        workflow.pause(now=at(1))
    workflow.retry_job(job(workflow, "a"), now=at(2))
    assert names(workflow.collect_events()) == ["JobRetryRequested", "JobRetryScheduled", "JobSubmitted"]


def test_a_retry_requested_while_paused_is_submitted_on_resume() -> None:
    workflow, _ = start(definition(step("a"), step("x")))
    workflow.pause(now=at(1))
    workflow.record_error(job(workflow, "a"), "boom", now=at(2))
    assert names(workflow.collect_events()) == ["WorkflowPaused", "JobErrored"]
    workflow.retry_job(job(workflow, "a"), now=at(3))
    assert names(workflow.collect_events()) == ["JobRetryRequested"]
    workflow.resume(now=at(4))
    assert names(workflow.collect_events()) == ["WorkflowResumed", "JobRetryScheduled", "JobSubmitted"]


# --- pause / resume -----------------------------------------------------------------------


def test_a_paused_workflow_records_responses_but_submits_nothing_until_resumed() -> None:
    workflow, _ = start(definition(step("a"), step("b", parents=["a"]), step("c", retry={"max_attempts": 2})))
    workflow.pause(now=at(1), actor="ops")
    (paused,) = workflow.collect_events()
    assert isinstance(paused, ev.WorkflowPaused) and paused.actor == "ops"
    assert workflow.state.status == "paused"

    assert names(complete(workflow, "a", now=at(2))) == ["JobCompleted"]
    assert names(fail(workflow, "c", now=at(3))) == ["JobErrored"]  # retryable, but not while paused
    assert workflow.state.steps["a"].status == "processing"
    assert workflow.state.steps["b"].status == "waiting"

    workflow.resume(now=at(10))
    events = workflow.collect_events()
    assert names(events) == ["WorkflowResumed", "JobRetryScheduled", "JobSubmitted", "StepCompleted", "JobSubmitted"]
    assert [e.step_id for e in of_type(events, ev.JobSubmitted)] == ["c", "b"]
    assert all(e.timestamp == at(10) for e in events)


def test_pause_and_resume_are_idempotent_and_refused_once_finished() -> None:
    workflow, _ = start(definition(step("a")))
    workflow.resume(now=at(1))
    workflow.pause(now=at(1))
    workflow.pause(now=at(2))
    assert names(workflow.collect_events()) == ["WorkflowPaused"]
    workflow.resume(now=at(3))
    workflow.resume(now=at(4))
    assert names(workflow.collect_events()) == ["WorkflowResumed"]
    complete(workflow, "a")
    assert workflow.state.status == "completed"
    with pytest.raises(Rejected, match="cannot pause a workflow that is completed"):
        workflow.pause(now=at(5))
    with pytest.raises(Rejected, match="cannot resume a workflow that is completed"):
        workflow.resume(now=at(5))
    assert workflow.collect_events() == []


# --- stop / delete ------------------------------------------------------------------------


def test_stop_halts_every_active_job_and_step() -> None:
    workflow, _ = start(definition(step("a"), step("b"), step("c", parents=["a"])))
    complete(workflow, "b")
    active = job(workflow, "a")

    workflow.stop(now=at(5), reason="wrong input", actor="ops")
    events = workflow.collect_events()

    assert names(events) == ["WorkflowStopped"]
    (stopped,) = events
    assert isinstance(stopped, ev.WorkflowStopped)
    assert (stopped.reason, stopped.actor, stopped.jobs) == ("wrong input", "ops", (active,))
    state = workflow.state
    assert (state.status, state.reason, state.ended_at) == ("stopped", "wrong input", at(5))
    assert state.jobs[active].status == "stopped"
    assert {s: state.steps[s].status for s in "abc"} == {"a": "stopped", "b": "completed", "c": "stopped"}


def test_after_stop_late_answers_are_kept_and_decide_nothing() -> None:
    workflow, _ = start(ONE_TRY)
    job_id = job(workflow, "a")
    workflow.stop(now=at(1))
    workflow.collect_events()
    assert workflow.record_stopped(job_id, now=at(2), reason="stop order done") == "late"  # the worker's answer
    assert workflow.record_progress(job_id, 50, now=at(2)) == "late_progress"
    workflow.stop(now=at(3))
    assert workflow.record_completed(job_id, now=at(4), outputs={"x": 1}, cause="c1") == "late"
    late = workflow.collect_events()
    assert [(type(e), e.answer, e.job_status) for e in late] == [  # type: ignore[attr-defined]
        (ev.LateAnswerReceived, "stopped", "stopped"), (ev.LateAnswerReceived, "completed", "stopped")]
    assert late[1].outputs == {"x": 1}  # type: ignore[attr-defined]
    assert workflow.state.status == "stopped"
    assert workflow.record_completed(job_id, now=at(5), cause="c1") == "duplicate"


def test_a_finished_workflow_cannot_be_stopped() -> None:
    workflow, _ = start(definition(step("a")))
    complete(workflow, "a")
    with pytest.raises(Rejected, match="workflow is already completed"):
        workflow.stop(now=at(1))


def test_delete_ends_the_workflow_once() -> None:
    workflow, _ = start(ONE_TRY)
    active = job(workflow, "a")
    workflow.delete(now=at(1), actor="ops")
    workflow.delete(now=at(2), actor="ops")
    events = workflow.collect_events()
    assert names(events) == ["WorkflowDeleted"]
    assert events[0].jobs == (active,)
    assert (workflow.state.status, workflow.state.ended_at) == ("deleted", at(1))
    assert workflow.state.jobs[active].status == "stopped"
    with pytest.raises(Rejected):
        workflow.pause(now=at(3))
    with pytest.raises(Rejected, match="workflow is already deleted"):
        workflow.stop(now=at(3))


def test_a_completed_workflow_can_be_deleted() -> None:
    workflow, _ = start(definition(step("a")))
    complete(workflow, "a", now=at(1))
    workflow.delete(now=at(2))
    events = workflow.collect_events()
    assert names(events) == ["WorkflowDeleted"] and events[0].jobs == ()
    assert (workflow.state.status, workflow.state.ended_at) == ("deleted", at(1))
