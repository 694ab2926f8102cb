"""`stepflow.engine.events` is split in facts, decisions and records, and still names them all:
`from stepflow.engine import events as ev; ev.X` works for every name it ever had."""

from __future__ import annotations

from stepflow.engine import events as ev
from stepflow.engine.events import decisions, facts, records

# Every name of the module before the split.
NAMES = (
    "ActionRefused", "DECISIONS", "Event", "JobCompleted", "JobErrored", "JobProgressed",
    "JobRetryRequested", "JobRetryScheduled", "JobStopped", "JobSubmitted", "JobTimedOut",
    "JobUnroutable", "LateAnswerReceived", "MessageQuarantined", "MessageSuspected",
    "QUARANTINE_NAMESPACE", "REFUSAL_NAMESPACE", "STORED_EVENTS", "SUSPECT_NAMESPACE",
    "StepCompleted", "StepFailed", "StepSkipped", "SuspicionCleared", "WORKER_ORDER_NAMESPACE",
    "WorkerOrdered", "WorkflowCompleted", "WorkflowDeleted", "WorkflowEvent", "WorkflowFailed", "WorkflowNumbered",
    "WorkflowPaused", "WorkflowResumed", "WorkflowStarted", "WorkflowStopped", "codec", "decode",
    "encode", "quarantine_stream_id", "refusal_stream_id", "suspect_stream_id",
    "worker_order_stream_id",
)


def defined_in(module: object) -> set[type[ev.Event]]:
    return {value for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, ev.Event)
            and value.__module__ == module.__name__}  # type: ignore[attr-defined]


def test_every_name_is_still_in_events() -> None:
    assert sorted(ev.__all__) == sorted(NAMES)
    assert all(hasattr(ev, name) for name in NAMES)


def test_each_stored_event_lives_in_one_of_the_three_modules_and_is_named_in_events() -> None:
    kinds = {module.__name__: defined_in(module) for module in (facts, decisions, records)}
    every = set().union(*kinds.values())
    assert sum(map(len, kinds.values())) == len(every) == len(ev.STORED_EVENTS)
    assert every == set(ev.STORED_EVENTS)
    assert all(getattr(ev, cls.__name__) is cls for cls in every)
    assert set(ev.DECISIONS) == kinds[decisions.__name__]
    in_streams = {*kinds[facts.__name__], *kinds[decisions.__name__]}
    assert in_streams == set(ev.WorkflowEvent.__args__)  # type: ignore[attr-defined]
