"""One vocabulary: statuses, failure texts and the template scope are written once.

Each story: given the one definition of a word, the places that used to spell it out again
(the views' row counters, the timeline, hooks) read the same thing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
import pytest

from stepflow.engine import events as ev
from stepflow.engine.decisions import template_scope
from stepflow.engine.definitions import build_definition
from stepflow.engine.failures import halt, job_failure
from stepflow.engine.state import evolve
from stepflow.engine.statuses import JOB_STATUSES, STEP_STATUSES, WORKFLOW_FINAL, WORKFLOW_STATUSES
from stepflow.engine.validation import RUN_FIELDS
from stepflow.projections.history import describe
from stepflow.projections.rows import JOB_COUNT_FIELD, StepRow

T0 = datetime(2024, 5, 1, tzinfo=UTC)
WID = UUID("0b7a5d2e-3c1f-4f7e-9a63-5d1c2b8e4f10")


def event(cls: type[ev.Event], **fields: Any) -> Any:
    return cls(originator_id=WID, originator_version=2, timestamp=T0, **fields)


def test_every_job_status_has_a_step_counter_and_no_counter_is_left_over() -> None:
    counters = {f.name for f in msgspec.structs.fields(StepRow) if f.name.startswith("n_")}
    assert set(JOB_COUNT_FIELD) == set(JOB_STATUSES)
    assert set(JOB_COUNT_FIELD.values()) == counters


def test_the_status_tuples_keep_the_order_of_their_literals() -> None:
    assert JOB_STATUSES[:2] == ("queued", "processing") and JOB_STATUSES[-1] == "unroutable"
    assert STEP_STATUSES[0] == "waiting"
    assert WORKFLOW_STATUSES[0] == "running"
    assert WORKFLOW_FINAL <= set(WORKFLOW_STATUSES)


@pytest.mark.parametrize(
    ("ending", "failure", "detail"),
    [
        (event(ev.JobErrored, job_id="j", message="boom", kind="http"), ("error", "boom", "http"), "http: boom"),
        (event(ev.JobTimedOut, job_id="j", timeout_s=30.0), ("error", "no response within 30s", "timeout"),
         "no response within 30s"),
        (event(ev.JobUnroutable, job_id="j", job_type="encode"),
         ("unroutable", "no queue serves job type 'encode'", "unroutable"), "no queue serves job type 'encode'"),
        (event(ev.JobStopped, job_id="j", reason=""), ("stopped", "stopped", "stopped"), "stopped"),
        (event(ev.JobStopped, job_id="j", reason="cancelled"), ("stopped", "cancelled", "stopped"), "cancelled"),
    ],
    ids=["errored", "timed-out", "unroutable", "stopped", "stopped-with-reason"],
)
def test_a_job_ending_reads_the_same_in_the_state_and_the_timeline(ending: Any, failure: tuple[Any, ...],
                                                                     detail: str) -> None:
    assert tuple(job_failure(ending)) == failure
    assert describe(ending) == detail


@pytest.mark.parametrize(
    ("halting", "expected"),
    [
        (event(ev.WorkflowStopped, reason=""), ("stopped", "stopped by operator")),
        (event(ev.WorkflowStopped, reason="maintenance"), ("stopped", "maintenance")),
        (event(ev.WorkflowDeleted), ("deleted", "deleted")),
    ],
)
def test_a_halt_gives_its_status_and_reason(halting: Any, expected: tuple[str, str]) -> None:
    assert halt(halting) == expected


def test_the_template_scope_binds_the_item_and_the_run_fields_validation_allows() -> None:
    definition = build_definition({"identifier": "scope", "version": "2.0.0", "parameters": [{"id": "p"}],
                                   "steps": [{"id": "a", "job_type": "x"}]})
    state = evolve(None, ev.WorkflowStarted(originator_id=WID, originator_version=1, timestamp=T0,
                                            definition=definition, parameters={"p": "v"}))
    plain = template_scope(state)
    assert plain == {"workflow": {"p": "v"}, "steps": {}}
    assert template_scope(state, item=None)["item"] is None  # an item may be None, and is still bound
    run = template_scope(state, run=True)["run"]
    assert tuple(run) == RUN_FIELDS
    assert run == {"id": str(WID), "status": "running", "reason": "", "definition": "scope", "version": "2.0.0"}
