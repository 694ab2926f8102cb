"""`WorkflowEngine.save` mirrors eventsourcing's `Application.save` with a cheaper collection of
events (`Collected`): same events, aggregates and keyword arguments, without the Protocol checks."""

from __future__ import annotations

import inspect
import textwrap
import threading
import uuid
from datetime import UTC, datetime

import pytest
from eventsourcing.application import Application, ProcessingEvent

from stepflow.engine import events as ev
from stepflow.engine.application import Collected, WorkflowEngine
from stepflow.engine.definitions import build_definition
from stepflow.engine.workflow import Workflow

ONE_STEP = build_definition({"identifier": "one", "steps": [{"id": "only", "job_type": "noop"}]})

# The statements of eventsourcing's `Application.save` that `WorkflowEngine.save` repeats. If
# an upgrade of eventsourcing changes them, this fails: carry the change over, then update it.
LIBRARY_SAVE = [
    "processing_event: ProcessingEvent[TAggregateID] = ProcessingEvent()",
    "processing_event.collect_events(*objs, **kwargs)",
    "recordings = self._record(processing_event)",
    "self._take_snapshots(processing_event)",
    "self._notify(recordings)",
    "self.notify(processing_event.events)  # Deprecated.",
    "return recordings",
]


def _statements(function: object) -> list[str]:
    source = textwrap.dedent(inspect.getsource(function))  # type: ignore[arg-type]
    body = source.split('"""')[-1] if '"""' in source else source.split(":", 1)[1]
    return [line.strip() for line in body.splitlines() if line.strip()]


def test_the_library_save_is_still_the_one_mirrored() -> None:
    assert _statements(Application.save) == LIBRARY_SAVE


def _objects() -> tuple[Workflow, ev.WorkflowNumbered]:
    now = datetime.now(UTC)
    workflow = Workflow.start(uuid.uuid4(), ONE_STEP, {}, now=now)
    numbered = ev.WorkflowNumbered(originator_id=uuid.uuid4(), originator_version=1, timestamp=now,
                                   workflow_id=workflow.id)
    return workflow, numbered


def test_collected_holds_what_the_library_would() -> None:
    workflow, numbered = _objects()
    pending = list(workflow._pending)
    ours = Collected()
    ours.collect_events(workflow, None, numbered, note="x")
    workflow._pending = list(pending)
    theirs: ProcessingEvent[uuid.UUID] = ProcessingEvent()
    theirs.collect_events(workflow, None, numbered, note="x")
    assert ours.events == theirs.events == [*pending, numbered]
    assert ours.aggregates == theirs.aggregates == {workflow.id: workflow}
    assert ours.saved_kwargs == theirs.saved_kwargs == {"note": "x"}


def test_the_engine_saves_without_the_protocol_checks(memory_engine: WorkflowEngine,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("the library's collection was used for the engine's own objects")

    monkeypatch.setattr(ProcessingEvent, "collect_events", refuse)
    workflow_id = memory_engine.start_workflow(ONE_STEP)
    assert memory_engine.workflow_state(workflow_id).status == "running"
    assert [type(e).__name__ for e in memory_engine.history(workflow_id)][:1] == ["WorkflowStarted"]


def test_committed_position_is_this_threads_last_commit(memory_engine: WorkflowEngine) -> None:
    assert memory_engine.committed_position() == 0
    memory_engine.start_workflow(ONE_STEP)
    mine = memory_engine.committed_position()
    assert mine == memory_engine.max_notification_id() > 0
    other = threading.Thread(target=memory_engine.start_workflow, args=(ONE_STEP,))
    other.start()
    other.join()
    assert memory_engine.max_notification_id() > mine == memory_engine.committed_position()
