"""Redelivery and determinism: a message applied twice changes nothing, a refused one records
nothing, and the same facts always lead to the same decisions and job ids."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pytest
from workflow_story import (
    WORKFLOW_ID,
    at,
    complete,
    definition,
    fail,
    job,
    names,
    param,
    start,
    step,
)

from stepflow.engine import commands as cmd
from stepflow.engine import events as ev
from stepflow.engine.decisions import decide, job_id_for
from stepflow.engine.state import evolve
from stepflow.engine.workflow import Rejected, Workflow, project_workflow

FLOW = definition(
    step("probe"),
    step("encode", parents=["probe"], fan_out="{workflow.heights}", parameters={"h": "{item}"},
         retry={"max_attempts": 2, "backoff_s": 3}),
    step("publish", parents=["encode"], parameters={"files": "{steps.encode.outputs.file}"}),
    parameters=(param("heights", "array_of_integers", default=[360, 720]),),
)


def snapshot_of(workflow: Workflow) -> Any:
    return msgspec.to_builtins(workflow.state, order="deterministic")


# --- the same message twice ---------------------------------------------------------------


def test_a_redelivered_completion_is_one_transition() -> None:
    workflow, _ = start(FLOW)
    probe = job(workflow, "probe")
    first = complete(workflow, "probe", cause="msg-1", outputs={"ok": True})
    assert names(first) == ["JobCompleted", "StepCompleted", "JobSubmitted", "JobSubmitted"]
    assert first[0].cause == "msg-1"
    before = snapshot_of(workflow)

    workflow.record_completed(probe, now=at(9), cause="msg-1", outputs={"ok": False})

    assert workflow.collect_events() == []
    assert snapshot_of(workflow) == before


@pytest.mark.parametrize("command", ["progress", "error", "stopped", "unroutable", "timeout", "retry", "pause", "stop", "delete"])
def test_any_command_carrying_a_seen_message_id_records_nothing(command: str) -> None:
    workflow, _ = start(FLOW)
    probe = job(workflow, "probe")
    workflow.record_progress(probe, 10, now=at(1), cause="msg-1")
    assert names(workflow.collect_events()) == ["JobProgressed"]
    before = snapshot_of(workflow)
    calls = {
        "progress": lambda: workflow.record_progress(probe, 20, now=at(2), cause="msg-1"),
        "error": lambda: workflow.record_error(probe, "x", now=at(2), cause="msg-1"),
        "stopped": lambda: workflow.record_stopped(probe, now=at(2), cause="msg-1"),
        "unroutable": lambda: workflow.record_unroutable(probe, "job_probe", now=at(2), cause="msg-1"),
        "timeout": lambda: workflow.record_timeout(probe, now=at(2), cause="msg-1"),
        "retry": lambda: workflow.retry_job(probe, now=at(2), cause="msg-1"),
        "pause": lambda: workflow.pause(now=at(2), cause="msg-1"),
        "stop": lambda: workflow.stop(now=at(2), cause="msg-1"),
        "delete": lambda: workflow.delete(now=at(2), cause="msg-1"),
    }
    calls[command]()
    assert workflow.collect_events() == []
    assert snapshot_of(workflow) == before


@pytest.mark.parametrize("command", [
    cmd.RecordProgress(workflow_id=WORKFLOW_ID, job_id="", progression=20, cause="msg-1"),
    cmd.RecordError(workflow_id=WORKFLOW_ID, job_id="", message="x", cause="msg-1"),
    cmd.RecordStopped(workflow_id=WORKFLOW_ID, job_id="", cause="msg-1"),
    cmd.RecordUnroutable(workflow_id=WORKFLOW_ID, job_id="", job_type="job_probe", cause="msg-1"),
    cmd.RecordTimeout(workflow_id=WORKFLOW_ID, job_id="", cause="msg-1"),
    cmd.RecordCompleted(workflow_id=WORKFLOW_ID, job_id="", cause="msg-1"),
], ids=lambda c: type(c).__name__)
def test_a_command_as_data_is_handled_like_the_method_it_names(command: cmd.Command) -> None:
    workflow, _ = start(FLOW)
    probe = job(workflow, "probe")
    workflow.record_progress(probe, 10, now=at(1), cause="msg-1")
    workflow.collect_events()
    assert workflow.handle(msgspec.structs.replace(command, job_id=probe), at(2)) == "duplicate"
    assert workflow.collect_events() == []
    assert workflow.handle(cmd.RecordProgress(workflow_id=WORKFLOW_ID, job_id=probe, progression=30,
                                              cause="msg-2"), at(3)) is None
    assert [e.progression for e in workflow.collect_events()] == [30]  # type: ignore[attr-defined]


def test_a_command_the_aggregate_does_not_know_is_a_type_error() -> None:
    workflow, _ = start(FLOW)
    with pytest.raises(TypeError, match="unknown command Command"):
        workflow.handle(cmd.Command(workflow_id=WORKFLOW_ID), at(1))


def test_the_start_message_id_is_remembered() -> None:
    workflow, _ = start(FLOW, cause="start-1")
    workflow.pause(now=at(1), cause="start-1")
    assert workflow.collect_events() == []
    assert "start-1" in workflow.state.seen


def test_a_second_completion_with_another_message_id_is_a_late_answer_and_changes_no_job() -> None:
    workflow, _ = start(FLOW)
    probe = job(workflow, "probe")
    complete(workflow, "probe", cause="msg-1")
    jobs_before = msgspec.to_builtins(workflow.state.jobs, order="deterministic")
    assert workflow.record_completed(probe, now=at(2), cause="msg-2", outputs={"again": 1}) == "late"
    assert workflow.record_error(probe, "late", now=at(2), cause="msg-3") == "late"
    events = workflow.collect_events()
    assert [(type(e).__name__, e.cause, e.answer) for e in events] == [  # type: ignore[attr-defined]
        ("LateAnswerReceived", "msg-2", "completed"), ("LateAnswerReceived", "msg-3", "error")]
    assert msgspec.to_builtins(workflow.state.jobs, order="deterministic") == jobs_before
    assert workflow.record_completed(probe, now=at(3), cause="msg-2", outputs={"again": 1}) == "duplicate"
    assert workflow.collect_events() == []


def test_an_applied_message_id_with_another_body_is_a_conflicting_duplicate() -> None:
    workflow, _ = start(FLOW)
    probe = job(workflow, "probe")
    workflow.record_completed(probe, now=at(1), cause="msg-1", outputs={"n": 1}, digest="aaaa")
    workflow.collect_events()
    before = snapshot_of(workflow)
    assert workflow.record_completed(probe, now=at(2), cause="msg-1", outputs={"n": 1}, digest="aaaa") == "duplicate"
    with pytest.raises(Rejected, match="applied with body sha256:aaaa; this body is sha256:bbbb") as raised:
        workflow.record_completed(probe, now=at(2), cause="msg-1", outputs={"n": 2}, digest="bbbb")
    assert (raised.value.kind, raised.value.applied_digest) == ("conflicting_duplicate", "aaaa")
    assert workflow.collect_events() == []
    assert snapshot_of(workflow) == before


def test_a_late_progression_after_completion_records_nothing() -> None:
    workflow, _ = start(FLOW)
    probe = job(workflow, "probe")
    complete(workflow, "probe", cause="msg-1")
    workflow.record_progress(probe, 90, now=at(2), cause="msg-0")
    assert workflow.collect_events() == []
    assert workflow.state.jobs[probe].progression == 100


def test_a_response_for_an_unknown_job_is_rejected() -> None:
    workflow, _ = start(FLOW)
    with pytest.raises(Rejected, match=f"workflow {WORKFLOW_ID} has no job nope"):
        workflow.record_completed("nope", now=at(1), cause="msg-9")
    with pytest.raises(Rejected, match="has no job nope"):
        workflow.record_progress("nope", 5, now=at(1))
    assert workflow.collect_events() == []


@pytest.mark.parametrize(("given", "recorded"), [(150, 100), (-5, 0), (42, 42)])
def test_progression_is_clamped_to_a_percentage(given: int, recorded: int) -> None:
    workflow, _ = start(FLOW)
    workflow.record_progress(job(workflow, "probe"), given, now=at(1))
    (progressed,) = workflow.collect_events()
    assert progressed.progression == recorded


# --- determinism --------------------------------------------------------------------------


def test_job_ids_are_stable_and_name_the_jobs_place() -> None:
    assert job_id_for(WORKFLOW_ID, "encode", 2, 1) == "29230af9-57e3-58c7-8900-1573dd07ca1b"
    assert job_id_for(WORKFLOW_ID, "encode", 2, 1) == str(uuid.uuid5(WORKFLOW_ID, "encode/2/1"))
    others = {
        job_id_for(uuid.UUID(int=1), "encode", 2, 1),
        job_id_for(WORKFLOW_ID, "probe", 2, 1),
        job_id_for(WORKFLOW_ID, "encode", 1, 1),
        job_id_for(WORKFLOW_ID, "encode", 2, 2),
    }
    assert len(others) == 4 and job_id_for(WORKFLOW_ID, "encode", 2, 1) not in others


def play(workflow_id: uuid.UUID = WORKFLOW_ID) -> tuple[Workflow, list[ev.Event]]:
    """A fixed story: probe done, one encode retried then done, the other done, publish done."""
    workflow = Workflow.start(workflow_id, FLOW, {}, now=at(0), cause="start")
    history = workflow.collect_events()
    history += complete(workflow, "probe", now=at(1), cause="m1", outputs={"ok": True})
    history += fail(workflow, "encode", 0, now=at(2), cause="m2")
    history += complete(workflow, "encode", 1, now=at(3), cause="m3", outputs={"file": "720.mp4"})
    history += complete(workflow, "encode", 0, now=at(4), cause="m4", outputs={"file": "360.mp4"})
    history += complete(workflow, "publish", now=at(5), cause="m5")
    assert workflow.state.status == "completed"
    assert len(history) == workflow.version == 16
    return workflow, history


def test_the_same_facts_give_byte_identical_events() -> None:
    (_, first), (_, second) = play(), play()
    assert [ev.encode(e) for e in first] == [ev.encode(e) for e in second]
    (_, other) = play(uuid.UUID(int=7))
    assert {e.job_id for e in other if isinstance(e, ev.JobSubmitted)}.isdisjoint(
        {e.job_id for e in first if isinstance(e, ev.JobSubmitted)}
    )


def test_replaying_the_facts_re_derives_every_stored_decision() -> None:
    workflow, history = play()
    stored = [ev.decode(ev.encode(e)) for e in history]  # as read back from a store
    state = None
    position = 0
    while position < len(stored):
        fact = stored[position]
        assert not isinstance(fact, ev.DECISIONS), f"unexpected decision at {position}: {fact}"
        state = evolve(state, fact)
        position += 1
        while decisions := decide(state, fact.timestamp):
            assert decisions == stored[position : position + len(decisions)]
            for decision in decisions:
                state = evolve(state, decision)
            position += len(decisions)
    assert msgspec.to_builtins(state, order="deterministic") == snapshot_of(workflow)


def test_project_workflow_rebuilds_the_live_state() -> None:
    workflow, history = play()
    rebuilt = project_workflow(None, history)
    assert rebuilt is not None
    assert snapshot_of(rebuilt) == snapshot_of(workflow)
    assert rebuilt.version == len(history)
    assert decide(rebuilt.state, at(99)) == []
