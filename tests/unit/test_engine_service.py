"""The application service on the in-memory store: start, execute batches, refuse, read."""

from __future__ import annotations

import uuid
from uuid import UUID

import pytest
from workflow_story import definition, names, param, step

from stepflow.engine import commands as cmd
from stepflow.engine import events as ev
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.definitions import DefinitionError
from stepflow.engine.workflow import Rejected

FLOW = definition(
    step("a", parameters={"src": "{workflow.source}"}),
    step("b", parents=["a"], retry={"max_attempts": 2, "backoff_s": 0}, timeout_s=10),
    parameters=(param("source"), param("height", "integer", default=720)),
)


def current(engine: WorkflowEngine, workflow_id: UUID, step_id: str, index: int = 0) -> str:
    return engine.workflow_state(workflow_id).steps[step_id].jobs[index]


def stored_since(engine: WorkflowEngine, after: int) -> list[tuple[UUID, str]]:
    return [(e.originator_id, type(e).__name__) for _, e in engine.notifications(after, 1000)]


def test_start_workflow_stores_the_start_and_the_first_jobs(memory_engine: WorkflowEngine) -> None:
    workflow_id = memory_engine.start_workflow(FLOW, {"source": "in.mov"}, labels=["demo"], actor="alice")

    assert names(memory_engine.history(workflow_id)) == ["WorkflowStarted", "JobSubmitted"]
    state = memory_engine.workflow_state(workflow_id)
    assert (state.status, state.parameters, state.labels, state.started_by) == (
        "running", {"source": "in.mov", "height": 720}, ("demo",), "alice",
    )
    # the start, its first job, and the workflow's number (the index of its jobs' wire ids)
    assert memory_engine.max_notification_id() == 3
    notified = memory_engine.notifications(0, 10)
    assert [n for n, _ in notified] == [1, 2, 3]
    assert [type(e).__name__ for _, e in notified] == ["WorkflowNumbered", "WorkflowStarted", "JobSubmitted"]
    assert [type(e).__name__ for _, e in memory_engine.notifications(0, 10, topics=["JobSubmitted"])] == ["JobSubmitted"]
    assert memory_engine.notifications(3, 10) == []


@pytest.mark.parametrize(
    ("parameters", "path"),
    [({}, "$.parameters.source"), ({"source": 1}, "$.parameters.source"),
     ({"source": "x", "height": "720"}, "$.parameters.height"), ({"source": "x", "colour": 1}, "$.parameters.colour")],
)
def test_start_with_bad_parameters_stores_nothing(memory_engine: WorkflowEngine, parameters: dict, path: str) -> None:
    memory_engine.start_workflow(FLOW, {"source": "in.mov"})
    before = memory_engine.max_notification_id()
    with pytest.raises(DefinitionError) as caught:
        memory_engine.start_workflow(FLOW, parameters)
    assert caught.value.path == path
    assert memory_engine.max_notification_id() == before


def test_a_repeated_start_request_is_a_no_op_and_another_is_refused(memory_engine: WorkflowEngine) -> None:
    workflow_id = uuid.uuid4()
    assert memory_engine.start_workflow(FLOW, {"source": "x"}, workflow_id=workflow_id, cause="req-1") == workflow_id
    before = memory_engine.max_notification_id()
    assert memory_engine.start_workflow(FLOW, {"source": "x"}, workflow_id=workflow_id, cause="req-1") == workflow_id
    with pytest.raises(Rejected, match=f"workflow {workflow_id} already exists"):
        memory_engine.start_workflow(FLOW, {"source": "x"}, workflow_id=workflow_id, cause="req-2")
    assert memory_engine.max_notification_id() == before


def test_execute_stores_a_batch_and_answers_each_command(memory_engine: WorkflowEngine) -> None:
    first = memory_engine.start_workflow(FLOW, {"source": "one.mov"})
    second = memory_engine.start_workflow(FLOW, {"source": "two.mov"})
    first_job, second_job = current(memory_engine, first, "a"), current(memory_engine, second, "a")
    unknown = uuid.uuid4()
    before = memory_engine.max_notification_id()

    outcomes = memory_engine.execute([
        cmd.RecordCompleted(workflow_id=first, job_id=first_job, cause="m1", outputs={"x": 1}),
        cmd.RecordProgress(workflow_id=second, job_id=second_job, progression=50, cause="m2"),
        cmd.RecordCompleted(workflow_id=unknown, job_id=first_job, cause="m3"),
        cmd.RecordCompleted(workflow_id=first, job_id="nope", cause="m4"),
        cmd.RecordCompleted(workflow_id=first, job_id=first_job, cause="m1"),
        cmd.RecordCompleted(workflow_id=second, job_id=second_job, cause="m5"),
        cmd.RecordProgress(workflow_id=second, job_id=second_job, progression=60, cause="m6"),
    ])

    assert outcomes == [
        cmd.OK,
        cmd.OK,
        cmd.Outcome(rejected=f"unknown workflow {unknown}", kind="unknown"),
        cmd.Outcome(rejected=f"workflow {first} has no job nope", kind="unknown"),
        cmd.Outcome(ignored="duplicate"),
        cmd.OK,
        cmd.Outcome(ignored="late_progress"),  # after its completion
    ]
    assert [o.ok for o in outcomes] == [True, True, False, False, True, True, True]
    assert stored_since(memory_engine, before) == [
        (first, "JobCompleted"), (first, "StepCompleted"), (first, "JobSubmitted"),
        (second, "JobProgressed"), (second, "JobCompleted"), (second, "StepCompleted"), (second, "JobSubmitted"),
    ]
    assert memory_engine.workflow_state(first).seen >= {"m1"}
    assert "m4" not in memory_engine.workflow_state(first).seen


def test_refused_commands_store_nothing_and_late_answers_are_kept(memory_engine: WorkflowEngine) -> None:
    workflow_id = memory_engine.start_workflow(FLOW, {"source": "in.mov"})
    job_id = current(memory_engine, workflow_id, "a")
    memory_engine.execute([cmd.RecordCompleted(workflow_id=workflow_id, job_id=job_id, cause="m1")])
    before = memory_engine.max_notification_id()
    unknown = uuid.uuid4()

    outcomes = memory_engine.execute([
        cmd.RetryJob(workflow_id=workflow_id, job_id=job_id, actor="ops"),
        cmd.StopWorkflow(workflow_id=unknown),
    ])
    assert [(o.rejected, o.kind) for o in outcomes] == [
        (f"job {job_id} is completed; only an errored, stopped or unroutable job can be retried", "refused"),
        (f"unknown workflow {unknown}", "unknown"),
    ]
    assert memory_engine.max_notification_id() == before

    late = memory_engine.execute([
        cmd.RecordCompleted(workflow_id=workflow_id, job_id=job_id, cause="m2", outputs={"x": 2}),
        cmd.RecordError(workflow_id=workflow_id, job_id=job_id, message="late", cause="m3"),
    ])
    assert late == [cmd.Outcome(ignored="late")] * 2
    assert [(e.answer, e.job_status) for _, e in memory_engine.notifications(before, 10)] == [
        ("completed", "completed"), ("error", "completed")]


def test_every_command_type_reaches_the_aggregate(memory_engine: WorkflowEngine) -> None:
    w = memory_engine.start_workflow(FLOW, {"source": "in.mov"})
    run = memory_engine.execute
    a = current(memory_engine, w, "a")
    assert run([cmd.RecordProgress(workflow_id=w, job_id=a, progression=5, worker="w1"),
                cmd.PauseWorkflow(workflow_id=w, actor="ops"),
                cmd.RecordCompleted(workflow_id=w, job_id=a, outputs={"f": 1}),
                cmd.ResumeWorkflow(workflow_id=w, actor="ops")]) == [cmd.OK] * 4
    b = current(memory_engine, w, "b")
    assert run([cmd.RecordTimeout(workflow_id=w, job_id=b)]) == [cmd.OK]
    b2 = current(memory_engine, w, "b")
    assert run([cmd.RecordError(workflow_id=w, job_id=b2, message="boom", kind="io")]) == [cmd.OK]
    assert memory_engine.workflow_state(w).status == "error"
    assert run([cmd.RetryJob(workflow_id=w, job_id=b2, actor="ops")]) == [cmd.OK]
    b3 = current(memory_engine, w, "b")
    assert run([cmd.RecordUnroutable(workflow_id=w, job_id=b3, job_type="job_b")]) == [cmd.OK]
    assert run([cmd.RetryJob(workflow_id=w, job_id=b3)]) == [cmd.OK]
    b4 = current(memory_engine, w, "b")
    assert run([cmd.RecordStopped(workflow_id=w, job_id=b4, reason="worker gone")]) == [cmd.OK]
    assert run([cmd.RetryJob(workflow_id=w, job_id=b4)]) == [cmd.OK]
    assert run([cmd.StopWorkflow(workflow_id=w, reason="enough"), cmd.DeleteWorkflow(workflow_id=w)]) == [cmd.OK] * 2

    assert names(memory_engine.history(w)) == [
        "WorkflowStarted", "JobSubmitted",
        "JobProgressed", "WorkflowPaused", "JobCompleted", "WorkflowResumed", "StepCompleted", "JobSubmitted",
        "JobTimedOut", "JobRetryScheduled", "JobSubmitted",
        "JobErrored", "StepFailed", "WorkflowFailed",
        "JobRetryRequested", "JobRetryScheduled", "JobSubmitted",
        "JobUnroutable", "StepFailed", "WorkflowFailed",
        "JobRetryRequested", "JobRetryScheduled", "JobSubmitted",
        "JobStopped", "StepFailed", "WorkflowFailed",
        "JobRetryRequested", "JobRetryScheduled", "JobSubmitted",
        "WorkflowStopped", "WorkflowDeleted",
    ]
    assert memory_engine.workflow_state(w).status == "deleted"


def test_command_raises_what_execute_would_return(memory_engine: WorkflowEngine) -> None:
    workflow_id = memory_engine.start_workflow(FLOW, {"source": "in.mov"})
    memory_engine.command(cmd.PauseWorkflow(workflow_id=workflow_id))
    assert memory_engine.workflow_state(workflow_id).status == "paused"
    with pytest.raises(Rejected, match="unknown workflow"):
        memory_engine.command(cmd.PauseWorkflow(workflow_id=uuid.uuid4()))


class Unheard(cmd.Command, frozen=True, kw_only=True):
    """A command the engine has no handler for: an exception, not a refusal."""


def test_a_failing_batch_stores_nothing_and_forgets_its_changes(memory_engine: WorkflowEngine) -> None:
    workflow_id = memory_engine.start_workflow(FLOW, {"source": "in.mov"})
    job_id = current(memory_engine, workflow_id, "a")
    before = memory_engine.max_notification_id()
    completed = cmd.RecordCompleted(workflow_id=workflow_id, job_id=job_id, cause="m1")

    with pytest.raises(TypeError, match="unknown command Unheard"):
        memory_engine.execute([completed, Unheard(workflow_id=workflow_id)])

    assert memory_engine.max_notification_id() == before
    assert memory_engine.workflow_state(workflow_id).jobs[job_id].status == "queued"
    # the cached aggregate was evicted: the same message is news, not a redelivery
    assert memory_engine.execute([completed]) == [cmd.OK]
    assert stored_since(memory_engine, before) == [
        (workflow_id, "JobCompleted"), (workflow_id, "StepCompleted"), (workflow_id, "JobSubmitted"),
    ]


def test_reads_at_a_version_and_a_finished_run(memory_engine: WorkflowEngine) -> None:
    workflow_id = memory_engine.start_workflow(FLOW, {"source": "in.mov"})
    for step_id in ("a", "b"):
        job_id = current(memory_engine, workflow_id, step_id)
        assert memory_engine.execute([cmd.RecordCompleted(workflow_id=workflow_id, job_id=job_id)]) == [cmd.OK]
    state = memory_engine.workflow_state(workflow_id)
    assert state.status == "completed" and state.version == 8
    early = memory_engine.workflow_state(workflow_id, version=2)
    assert (early.version, early.status, len(early.jobs)) == (2, "running", 1)
    history = memory_engine.history(workflow_id)
    assert [e.originator_version for e in history] == list(range(1, 9))
    assert isinstance(history[-1], ev.WorkflowCompleted)
