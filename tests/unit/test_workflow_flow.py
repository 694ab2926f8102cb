"""The Workflow aggregate moving forward: DAG order, fan-out and fan-in, conditions.

Given a started workflow (its events collected), when a job's response is recorded, then
exactly these events follow. No store: `Workflow.start` and its commands, at a fixed time.
"""

from __future__ import annotations

from workflow_story import (
    T0,
    WORKFLOW_ID,
    check_versions,
    complete,
    definition,
    job,
    names,
    of_type,
    param,
    start,
    step,
)

from stepflow.engine import events as ev
from stepflow.engine.decisions import job_id_for

DIAMOND = definition(
    step("a", parameters={"src": "{workflow.source}"}),
    step("b", parents=["a"], parameters={"probe": "{steps.a.outputs.info}"}),
    step("c", parents=["a"], timeout_s=30),
    step("d", parents=["b", "c"], parameters={"left": "{steps.b.outputs.file}", "right": "{steps.c.outputs.file}"}),
    parameters=(param("source"),),
)


def test_a_start_submits_only_the_roots() -> None:
    workflow, events = start(DIAMOND, {"source": "in.mov"}, actor="alice", cause="http-1")
    assert names(events) == ["WorkflowStarted", "JobSubmitted"]
    check_versions(workflow, events, 1)
    started, submitted = events
    assert isinstance(started, ev.WorkflowStarted)
    assert started.parameters == {"source": "in.mov"} and started.actor == "alice" and started.cause == "http-1"
    assert isinstance(submitted, ev.JobSubmitted)
    assert (submitted.step_id, submitted.index, submitted.attempt, submitted.job_type) == ("a", 0, 1, "job_a")
    assert submitted.parameters == {"src": "in.mov"}
    assert submitted.job_id == job_id_for(WORKFLOW_ID, "a", 0, 1)
    assert (submitted.priority, submitted.delay_s, submitted.timeout_s) == (0, 0.0, None)
    assert workflow.state.status == "running" and workflow.state.started_by == "alice"
    assert [s.status for s in workflow.state.steps.values()] == ["processing", "waiting", "waiting", "waiting"]


def test_a_diamond_runs_the_join_only_after_both_branches() -> None:
    workflow, _ = start(DIAMOND, {"source": "in.mov"})

    events = complete(workflow, "a", outputs={"info": {"fps": 25}})
    assert names(events) == ["JobCompleted", "StepCompleted", "JobSubmitted", "JobSubmitted"]
    check_versions(workflow, events, 3)
    b, c = of_type(events, ev.JobSubmitted)
    assert (b.step_id, b.parameters, b.priority) == ("b", {"probe": {"fps": 25}}, 1)
    assert (c.step_id, c.parameters, c.priority, c.timeout_s) == ("c", {}, 2, 30.0)

    events = complete(workflow, "b", outputs={"file": "b.mp4"})
    assert names(events) == ["JobCompleted", "StepCompleted"]
    assert workflow.state.steps["d"].status == "waiting"

    events = complete(workflow, "c", outputs={"file": "c.mp4"})
    assert names(events) == ["JobCompleted", "StepCompleted", "JobSubmitted"]
    (d,) = of_type(events, ev.JobSubmitted)
    assert (d.step_id, d.parameters, d.priority) == ("d", {"left": "b.mp4", "right": "c.mp4"}, 3)

    events = complete(workflow, "d", now=T0.replace(hour=13))
    assert names(events) == ["JobCompleted", "StepCompleted", "WorkflowCompleted"]
    check_versions(workflow, events, 12)
    assert workflow.state.status == "completed"
    assert workflow.state.ended_at == T0.replace(hour=13)
    assert all(s.status == "completed" for s in workflow.state.steps.values())


def test_independent_roots_start_together() -> None:
    _, events = start(definition(step("x"), step("y"), step("z", parents=["x", "y"])))
    assert [e.step_id for e in of_type(events, ev.JobSubmitted)] == ["x", "y"]


FAN = definition(
    step("encode", fan_out="{workflow.heights}", parameters={"height": "{item}", "src": "{workflow.source}"}),
    step("package", parents=["encode"], parameters={"files": "{steps.encode.outputs.file}"}),
    parameters=(param("source"), param("heights", "array_of_integers")),
)


def test_a_fan_out_submits_one_job_per_item_of_a_workflow_parameter() -> None:
    workflow, events = start(FAN, {"source": "in.mov", "heights": [360, 720, 1080]})
    submitted = of_type(events, ev.JobSubmitted)
    assert [(j.index, j.parameters) for j in submitted] == [
        (0, {"height": 360, "src": "in.mov"}),
        (1, {"height": 720, "src": "in.mov"}),
        (2, {"height": 1080, "src": "in.mov"}),
    ]
    assert len({j.job_id for j in submitted}) == 3
    assert workflow.state.steps["encode"].jobs == [j.job_id for j in submitted]


def test_a_fan_in_gets_the_outputs_in_item_order_whatever_the_completion_order() -> None:
    workflow, _ = start(FAN, {"source": "in.mov", "heights": [360, 720, 1080]})
    assert names(complete(workflow, "encode", 2, outputs={"file": "1080.mp4"})) == ["JobCompleted"]
    assert names(complete(workflow, "encode", 0, outputs={"file": "360.mp4"})) == ["JobCompleted"]
    events = complete(workflow, "encode", 1, outputs={"file": "720.mp4"})
    assert names(events) == ["JobCompleted", "StepCompleted", "JobSubmitted"]
    step_done, package = events[1], events[2]
    assert isinstance(step_done, ev.StepCompleted) and isinstance(package, ev.JobSubmitted)
    assert step_done.outputs == {"file": ["360.mp4", "720.mp4", "1080.mp4"]}
    assert package.parameters == {"files": ["360.mp4", "720.mp4", "1080.mp4"]}


def test_a_fan_out_over_a_previous_steps_output_list() -> None:
    wf_definition = definition(
        step("split", outputs=["segments"]),
        step("encode", parents=["split"], fan_out="{steps.split.outputs.segments}",
             parameters={"start": "{item.start}", "label": "seg-{item.start}"}),
        step("concat", parents=["encode"], parameters={"parts": "{steps.encode.outputs.part}"}),
    )
    workflow, _ = start(wf_definition)
    events = complete(workflow, "split", outputs={"segments": [{"start": 0}, {"start": 10}]})
    assert names(events) == ["JobCompleted", "StepCompleted", "JobSubmitted", "JobSubmitted"]
    assert [j.parameters for j in of_type(events, ev.JobSubmitted)] == [
        {"start": 0, "label": "seg-0"},
        {"start": 10, "label": "seg-10"},
    ]
    complete(workflow, "encode", 1, outputs={"part": "p1"})
    events = complete(workflow, "encode", 0, outputs={"part": "p0"})
    (concat,) = of_type(events, ev.JobSubmitted)
    assert concat.parameters == {"parts": ["p0", "p1"]}


def test_an_empty_fan_out_completes_the_step_at_once_and_the_join_gets_empty_lists() -> None:
    wf_definition = definition(
        step("encode", fan_out="{workflow.heights}", parameters={"h": "{item}"}, outputs=["file"]),
        step("package", parents=["encode"], parameters={"files": "{steps.encode.outputs.file}"}),
        parameters=(param("heights", "array_of_integers"),),
    )
    workflow, events = start(wf_definition, {"heights": []})
    assert names(events) == ["WorkflowStarted", "StepCompleted", "JobSubmitted"]
    assert events[1].step_id == "encode"
    assert workflow.state.steps["encode"].jobs == []
    assert events[2].step_id == "package" and events[2].parameters == {"files": []}


def test_a_fan_out_over_something_that_is_not_a_list_fails_the_step() -> None:
    wf_definition = definition(
        step("encode", fan_out="{workflow.heights}", parameters={"h": "{item}"}),
        parameters=(param("heights"),),
    )
    workflow, events = start(wf_definition, {"heights": "720"})
    assert names(events) == ["WorkflowStarted", "StepFailed", "WorkflowFailed"]
    assert events[1].reason == "fan_out '{workflow.heights}' gave str, not a list"
    assert events[2].reason == "step 'encode' failed: fan_out '{workflow.heights}' gave str, not a list"
    assert workflow.state.status == "error"


def test_a_false_condition_skips_the_step_and_its_children_still_run() -> None:
    wf_definition = definition(
        step("thumbs", condition="{workflow.thumbnails}"),
        step("notify", parents=["thumbs"]),
        parameters=(param("thumbnails", "boolean", default=False),),
    )
    workflow, events = start(wf_definition)
    assert names(events) == ["WorkflowStarted", "StepSkipped", "JobSubmitted"]
    skipped = events[1]
    assert isinstance(skipped, ev.StepSkipped)
    assert (skipped.step_id, skipped.reason) == ("thumbs", "condition '{workflow.thumbnails}' is false")
    assert events[2].step_id == "notify"
    assert workflow.state.steps["thumbs"].status == "skipped"
    assert names(complete(workflow, "notify")) == ["JobCompleted", "StepCompleted", "WorkflowCompleted"]


def test_a_condition_can_read_an_ancestors_output_and_be_negated() -> None:
    wf_definition = definition(
        step("probe"),
        step("fix", parents=["probe"], condition="not {steps.probe.outputs.ok}"),
        step("publish", parents=["probe"], condition="{steps.probe.outputs.ok}"),
    )
    workflow, _ = start(wf_definition)
    events = complete(workflow, "probe", outputs={"ok": "yes"})
    assert names(events) == ["JobCompleted", "StepCompleted", "StepSkipped", "JobSubmitted"]
    assert events[2].step_id == "fix" and events[3].step_id == "publish"


def test_a_template_without_a_value_at_run_time_fails_the_step() -> None:
    wf_definition = definition(
        step("a", parameters={"crf": "{workflow.crf}"}),
        parameters=(param("crf", "integer", required=False),),
    )
    workflow, events = start(wf_definition)
    assert names(events) == ["WorkflowStarted", "StepFailed", "WorkflowFailed"]
    assert events[1].reason == "no value for {workflow.crf}"
    assert workflow.state.reason == "step 'a' failed: no value for {workflow.crf}"


def test_progress_is_recorded_and_marks_the_job_processing() -> None:
    workflow, _ = start(DIAMOND, {"source": "in.mov"})
    workflow.record_progress(job(workflow, "a"), 40, now=T0.replace(minute=1), message="encoding", worker="w1")
    (progressed,) = workflow.collect_events()
    assert isinstance(progressed, ev.JobProgressed)
    assert (progressed.progression, progressed.message, progressed.worker) == (40, "encoding", "w1")
    state = workflow.state.jobs[job(workflow, "a")]
    assert (state.status, state.progression, state.started_at) == ("processing", 40, T0.replace(minute=1))
