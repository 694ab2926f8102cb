"""Notification steps and hooks in definitions and decisions, and the ActionRefused event."""

from __future__ import annotations

from typing import Any

import pytest

from stepflow.engine import events as ev
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.decisions import NOTIFICATION_TIMEOUT_S
from stepflow.engine.definitions import DefinitionError, build_definition
from stepflow.projections import run_projections_once
from stepflow.projections.history import audit


def definition(*steps: dict[str, Any], **extra: Any) -> Any:
    return build_definition({
        "identifier": "n",
        "parameters": [{"id": "who", "type": "string", "default": "ops"}],
        "steps": list(steps),
        **extra,
    })


WORK = {"id": "work", "job_type": "w", "outputs": ["size"]}
NOTIFY = {
    "id": "tell", "job_type": "notify", "mode": "notification", "parents": ["work"],
    "notification": {"url": "http://127.0.0.1:9/{workflow.who}", "headers": {"X-Size": "{steps.work.outputs.size}"},
                     "body": {"size": "{steps.work.outputs.size}", "who": "{workflow.who}"}},
}


def test_notification_step_is_a_job_with_the_rendered_request(memory_engine: WorkflowEngine) -> None:
    wid = memory_engine.start_workflow(definition(WORK, NOTIFY))
    first = memory_engine.load(wid).state.current_jobs("work")[0]
    memory_engine.execute([ev_complete(wid, first.job_id, {"size": 42})])
    submitted = [e for e in memory_engine.history(wid) if isinstance(e, ev.JobSubmitted)]
    assert [e.mode for e in submitted] == ["job", "notification"]
    tell = submitted[1]
    assert tell.job_type == "notify"
    assert tell.parameters == {"method": "POST", "url": "http://127.0.0.1:9/ops", "headers": {"X-Size": 42},
                               "body": {"size": 42, "who": "ops"}}
    assert tell.timeout_s == NOTIFICATION_TIMEOUT_S
    assert submitted[0].timeout_s is None


def ev_complete(wid: Any, job_id: str, outputs: dict[str, Any]) -> Any:
    from stepflow.engine import commands as cmd

    return cmd.RecordCompleted(workflow_id=wid, job_id=job_id, outputs=outputs, cause=f"c:{job_id}")


@pytest.mark.parametrize(("step", "path", "reason"), [
    ({"id": "t", "job_type": "n", "mode": "notification"}, "$.steps[0].notification", "needs `notification`"),
    ({"id": "t", "job_type": "n", "notification": {"url": "http://x"}}, "$.steps[0].notification",
     "only a step of mode 'notification'"),
    ({"id": "t", "job_type": "n", "mode": "notification", "parameters": {"a": 1}, "notification": {"url": "http://x"}},
     "$.steps[0].parameters", "takes its request from `notification`"),
    ({"id": "t", "job_type": "n", "mode": "notification", "notification": {"url": "http://x/{workflow.nope}"}},
     "$.steps[0].notification.url", "unknown workflow parameter"),
    ({"id": "t", "job_type": "n", "mode": "notification", "notification": {"url": "http://x", "body": {"a": "{x"}}},
     "$.steps[0].notification.body", "unbalanced"),
    ({"id": "t", "job_type": "n", "mode": "fancy"}, "$.steps[0].mode", "Invalid enum value"),
])
def test_bad_notification_steps_name_the_field(step: dict[str, Any], path: str, reason: str) -> None:
    with pytest.raises(DefinitionError) as error:
        definition(step)
    assert error.value.path == path
    assert reason in error.value.reason


def test_hooks_are_validated() -> None:
    ok = definition(WORK, hooks={"on_completed": [{"url": "http://h/{run.id}?s={run.status}",
                                                   "body": "{steps.work.outputs.size} {workflow.who}"}],
                                 "on_error": [{"url": "http://h/e", "method": "PUT", "body": {"r": "{run.reason}"}}]})
    assert ok.hooks.on_completed[0].url.startswith("http://h/")
    for hooks, path in [
        ({"on_completed": [{"url": "http://h/{run.nope}"}]}, "$.hooks.on_completed[0].url"),
        ({"on_error": [{"url": "http://h", "body": "{steps.ghost.outputs.x}"}]}, "$.hooks.on_error[0].body"),
        ({"on_error": [{"url": "http://h", "headers": {"A": "{item}"}}]}, "$.hooks.on_error[0].headers.A"),
        ({"on_done": []}, "$.hooks"),
    ]:
        with pytest.raises(DefinitionError) as error:
            definition(WORK, hooks=hooks)
        assert error.value.path == path, error.value


def test_action_refused_is_audited_and_ignored_by_the_views(memory_engine: WorkflowEngine) -> None:
    wid = memory_engine.start_workflow(definition(WORK))
    memory_engine.record_refused(actor="bob", action="abort", groups=("viewers",), definition="n",
                                 workflow_id=str(wid), request="POST /api/workflows/x/stop", reason="not in ops")
    run_projections_once(memory_engine)
    refused = [a for a in audit(memory_engine) if a.event == "ActionRefused"]
    assert len(refused) == 1
    assert refused[0].actor == "bob"
    assert refused[0].data["action"] == "abort" and tuple(refused[0].data["groups"]) == ("viewers",)
