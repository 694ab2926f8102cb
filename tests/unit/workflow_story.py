"""Helpers for the Workflow aggregate tests: given events, when a command, then events.

Plain functions (not fixtures) so a test reads top to bottom. Time is fixed (`T0`, `at()`),
the workflow id too, so every event a test sees is reproducible.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from stepflow.engine import events as ev
from stepflow.engine.definitions import WorkflowDefinition, build_definition
from stepflow.engine.workflow import Workflow

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
WORKFLOW_ID = UUID("0b7a5d2e-3c1f-4f7e-9a63-5d1c2b8e4f10")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def step(step_id: str, job_type: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "job_type": job_type or f"job_{step_id}", **fields}


def param(param_id: str, type: str = "string", **fields: Any) -> dict[str, Any]:
    return {"id": param_id, "type": type, **fields}


def definition(*steps: dict[str, Any], parameters: tuple[dict[str, Any], ...] = ()) -> WorkflowDefinition:
    return build_definition({"identifier": "story", "parameters": list(parameters), "steps": list(steps)})


def start(
    wf_definition: WorkflowDefinition, parameters: dict[str, Any] | None = None, **kwargs: Any
) -> tuple[Workflow, list[ev.Event]]:
    """Start a workflow at T0; return it and the events of its start (already collected)."""
    kwargs.setdefault("now", T0)
    workflow = Workflow.start(WORKFLOW_ID, wf_definition, parameters or {}, **kwargs)
    return workflow, workflow.collect_events()


def names(events: list[ev.Event]) -> list[str]:
    return [type(event).__name__ for event in events]


def of_type(events: list[ev.Event], cls: type[ev.Event]) -> list[Any]:
    return [event for event in events if isinstance(event, cls)]


def job(workflow: Workflow, step_id: str, index: int = 0) -> str:
    """The current attempt's job id of a step (at a fan-out index)."""
    return workflow.state.steps[step_id].jobs[index]


def complete(workflow: Workflow, step_id: str, index: int = 0, now: datetime = T0, **kwargs: Any) -> list[ev.Event]:
    """When the job of `step_id` completes: the events recorded."""
    workflow.record_completed(job(workflow, step_id, index), now=now, **kwargs)
    return workflow.collect_events()


def fail(
    workflow: Workflow, step_id: str, index: int = 0, message: str = "boom", now: datetime = T0, **kwargs: Any
) -> list[ev.Event]:
    """When the job of `step_id` errors: the events recorded."""
    workflow.record_error(job(workflow, step_id, index), message, now=now, **kwargs)
    return workflow.collect_events()


def check_versions(workflow: Workflow, events: list[ev.Event], first: int) -> None:
    """Events of one command are numbered without gaps, and the aggregate is at the last."""
    assert [e.originator_version for e in events] == list(range(first, first + len(events)))
    assert all(e.originator_id == workflow.id for e in events)
    if events:
        assert workflow.version == events[-1].originator_version
