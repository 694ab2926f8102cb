"""The Workflow aggregate when jobs go wrong: retries, backoff, timeouts, unroutable jobs,
non-retryable errors and steps allowed to fail."""

from __future__ import annotations

import pytest
from workflow_story import (
    WORKFLOW_ID,
    at,
    check_versions,
    complete,
    definition,
    fail,
    job,
    names,
    of_type,
    param,
    start,
    step,
)

from stepflow.engine import events as ev
from stepflow.engine.decisions import job_id_for
from stepflow.engine.definitions import RetryPolicy

RETRIED = definition(
    step("encode", parameters={"src": "{workflow.source}"}, timeout_s=30,
         retry={"max_attempts": 3, "backoff_s": 2, "backoff_multiplier": 3, "non_retryable": ["bad_input"]}),
    step("publish", parents=["encode"]),
    parameters=(param("source"),),
)


def test_an_error_schedules_a_retry_with_a_new_job_id_after_a_backoff() -> None:
    workflow, _ = start(RETRIED, {"source": "in.mov"})
    first = job(workflow, "encode")

    events = fail(workflow, "encode", message="disk full", now=at(10), kind="io", worker="w1")

    assert names(events) == ["JobErrored", "JobRetryScheduled", "JobSubmitted"]
    check_versions(workflow, events, 3)
    errored, scheduled, submitted = events
    assert isinstance(errored, ev.JobErrored) and (errored.message, errored.kind) == ("disk full", "io")
    assert isinstance(scheduled, ev.JobRetryScheduled)
    second = job_id_for(WORKFLOW_ID, "encode", 0, 2)
    assert (scheduled.job_id, scheduled.next_job_id, scheduled.attempt, scheduled.delay_s) == (first, second, 2, 2.0)
    assert isinstance(submitted, ev.JobSubmitted)
    assert submitted.job_id == second != first
    assert (submitted.step_id, submitted.index, submitted.attempt, submitted.delay_s) == ("encode", 0, 2, 2.0)
    assert submitted.parameters == {"src": "in.mov"} and submitted.timeout_s == 30.0
    assert workflow.state.jobs[first].status == "retrying"
    assert workflow.state.jobs[first].error == "disk full"
    assert workflow.state.jobs[second].not_before == at(12)
    assert workflow.state.steps["encode"].jobs == [second]
    assert workflow.state.status == "running"


def test_the_backoff_grows_and_exhaustion_fails_the_step_then_the_workflow() -> None:
    workflow, _ = start(RETRIED, {"source": "in.mov"})
    fail(workflow, "encode", now=at(1))
    events = fail(workflow, "encode", now=at(5))
    assert names(events) == ["JobErrored", "JobRetryScheduled", "JobSubmitted"]
    assert (events[1].attempt, events[1].delay_s) == (3, 6.0)
    assert events[2].attempt == 3
    third = job(workflow, "encode")

    events = fail(workflow, "encode", message="still broken", now=at(20))

    assert names(events) == ["JobErrored", "StepFailed", "WorkflowFailed"]
    failed, workflow_failed = events[1], events[2]
    assert isinstance(failed, ev.StepFailed)
    assert (failed.step_id, failed.reason) == ("encode", f"job {third} error: still broken")
    assert isinstance(workflow_failed, ev.WorkflowFailed)
    assert workflow_failed.reason == f"step 'encode' failed: job {third} error: still broken"
    assert workflow.state.status == "error" and workflow.state.ended_at == at(20)
    assert workflow.state.steps["publish"].status == "waiting"
    assert len(workflow.state.jobs) == 3


@pytest.mark.parametrize(
    ("policy", "attempt", "delay"),
    [
        (RetryPolicy(backoff_s=1, backoff_multiplier=2), 2, 1.0),
        (RetryPolicy(backoff_s=1, backoff_multiplier=2), 4, 4.0),
        (RetryPolicy(backoff_s=10, backoff_multiplier=10, max_backoff_s=50), 3, 50.0),
        (RetryPolicy(backoff_s=5, backoff_multiplier=1), 7, 5.0),
    ],
)
def test_delay_before_an_attempt(policy: RetryPolicy, attempt: int, delay: float) -> None:
    assert policy.delay_before(attempt) == delay


def test_the_backoff_is_capped_by_max_backoff() -> None:
    capped = definition(step("a", retry={"max_attempts": 4, "backoff_s": 10, "backoff_multiplier": 10, "max_backoff_s": 50}))
    workflow, _ = start(capped)
    delays = [of_type(fail(workflow, "a"), ev.JobRetryScheduled)[0].delay_s for _ in range(3)]
    assert delays == [10.0, 50.0, 50.0]


def test_a_non_retryable_error_kind_fails_at_once() -> None:
    workflow, _ = start(RETRIED, {"source": "in.mov"})
    events = fail(workflow, "encode", message="not a video", kind="bad_input")
    assert names(events) == ["JobErrored", "StepFailed", "WorkflowFailed"]
    assert workflow.state.jobs[job(workflow, "encode")].error_kind == "bad_input"


def test_a_job_stopped_by_its_worker_is_not_retried() -> None:
    workflow, _ = start(RETRIED, {"source": "in.mov"})
    workflow.record_stopped(job(workflow, "encode"), now=at(1), reason="worker shut down")
    events = workflow.collect_events()
    assert names(events) == ["JobStopped", "StepFailed", "WorkflowFailed"]
    assert events[1].reason == f"job {job(workflow, 'encode')} stopped: worker shut down"


def test_an_unroutable_job_fails_its_step_without_retry() -> None:
    workflow, _ = start(RETRIED, {"source": "in.mov"})
    job_id = job(workflow, "encode")
    workflow.record_unroutable(job_id, "job_encode", now=at(1), cause="nf-1")
    events = workflow.collect_events()
    assert names(events) == ["JobUnroutable", "StepFailed", "WorkflowFailed"]
    assert events[0].cause == "nf-1"
    assert events[1].reason == f"job {job_id} unroutable: no queue serves job type 'job_encode'"
    assert workflow.state.jobs[job_id].status == "unroutable"
    assert workflow.state.status == "error"


def test_a_timeout_errors_the_job_and_retries_it() -> None:
    workflow, _ = start(RETRIED, {"source": "in.mov"})
    job_id = job(workflow, "encode")
    workflow.record_timeout(job_id, now=at(31))
    events = workflow.collect_events()
    assert names(events) == ["JobTimedOut", "JobRetryScheduled", "JobSubmitted"]
    assert isinstance(events[0], ev.JobTimedOut) and events[0].timeout_s == 30.0
    timed_out = workflow.state.jobs[job_id]
    assert (timed_out.error, timed_out.error_kind, timed_out.ended_at) == ("no response within 30s", "timeout", at(31))


def test_a_timeout_can_be_non_retryable() -> None:
    wf_definition = definition(step("a", timeout_s=5, retry={"max_attempts": 3, "non_retryable": ["timeout"]}))
    workflow, _ = start(wf_definition)
    workflow.record_timeout(job(workflow, "a"), now=at(6))
    assert names(workflow.collect_events()) == ["JobTimedOut", "StepFailed", "WorkflowFailed"]


def test_a_timeout_for_a_job_without_timeout_or_already_finished_records_nothing() -> None:
    workflow, _ = start(definition(step("a"), step("b", parents=["a"], timeout_s=5)))
    workflow.record_timeout(job(workflow, "a"), now=at(100))
    assert workflow.collect_events() == []
    complete(workflow, "a")
    complete(workflow, "b")
    workflow.record_timeout(job(workflow, "b"), now=at(100))
    assert workflow.collect_events() == []
    assert workflow.state.status == "completed"


def test_allow_failure_completes_the_step_and_its_children_run() -> None:
    wf_definition = definition(step("thumbs", allow_failure=True), step("publish", parents=["thumbs"]))
    workflow, _ = start(wf_definition)
    events = fail(workflow, "thumbs", message="no frames")
    assert names(events) == ["JobErrored", "StepCompleted", "JobSubmitted"]
    done = events[1]
    assert isinstance(done, ev.StepCompleted)
    assert (done.step_id, done.outputs, done.failed_jobs) == ("thumbs", {}, 1)
    assert names(complete(workflow, "publish")) == ["JobCompleted", "StepCompleted", "WorkflowCompleted"]


def test_allow_failure_in_a_fan_out_waits_for_every_job_and_keeps_outputs_aligned_with_items() -> None:
    wf_definition = definition(
        step("encode", fan_out="{workflow.heights}", parameters={"h": "{item}"}, allow_failure=True),
        step("package", parents=["encode"], parameters={"files": "{steps.encode.outputs.file}"}),
        parameters=(param("heights", "array_of_integers"),),
    )
    workflow, _ = start(wf_definition, {"heights": [360, 720, 1080]})
    assert names(fail(workflow, "encode", 1)) == ["JobErrored"]
    assert names(complete(workflow, "encode", 2, outputs={"file": "1080.mp4"})) == ["JobCompleted"]
    events = complete(workflow, "encode", 0, outputs={"file": "360.mp4"})
    assert names(events) == ["JobCompleted", "StepCompleted", "JobSubmitted"]
    assert events[1].failed_jobs == 1
    assert events[1].outputs == {"file": ["360.mp4", None, "1080.mp4"]}
    assert events[2].parameters == {"files": ["360.mp4", None, "1080.mp4"]}


def test_one_failed_job_of_a_fan_out_fails_the_step_at_once() -> None:
    wf_definition = definition(
        step("encode", fan_out="{workflow.heights}", parameters={"h": "{item}"}),
        parameters=(param("heights", "array_of_integers"),),
    )
    workflow, _ = start(wf_definition, {"heights": [360, 720]})
    events = fail(workflow, "encode", 0)
    assert names(events) == ["JobErrored", "StepFailed", "WorkflowFailed"]
    # the sibling's late answer is still recorded, and decides nothing more
    assert names(complete(workflow, "encode", 1, outputs={"file": "720.mp4"})) == ["JobCompleted"]
    assert workflow.state.status == "error"
