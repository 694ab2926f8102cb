"""`Frontier`, the index `decide` reads, stays what a fresh one would be after every event.

Random walks over workflows with a diamond, a fan-out, conditions, retries, allow_failure,
pauses, operator retries and stops: after each stored event the index `evolve` kept up to date
must equal one built from the state's fields, and the decisions must be the ones a full scan
makes (the rule `decide` followed before the index).
"""

from __future__ import annotations

import random
import uuid

import pytest
from workflow_story import T0, at, definition, step

from stepflow.engine import events as ev
from stepflow.engine.state import Frontier, WorkflowState, evolve
from stepflow.engine.statuses import JOB_ACTIVE, JOB_FAILED
from stepflow.engine.workflow import Rejected, Workflow

FLOWS = [
    definition(
        step("a", retry={"max_attempts": 3, "backoff_s": 0}),
        step("b", parents=["a"], fan_out="{workflow.items}", parameters={"x": "{item}"},
             retry={"max_attempts": 2, "backoff_s": 0}),
        step("c", parents=["a"], condition="{workflow.flag}", allow_failure=True),
        step("d", parents=["b", "c"]),
        parameters=({"id": "items", "type": "array_of_integers", "default": [1, 2, 3]},
                    {"id": "flag", "type": "boolean", "default": True}),
    ),
    definition(*[step(f"s{i}", parents=[f"s{i - 1}"] if i else [], retry={"max_attempts": 2, "backoff_s": 0})
                 for i in range(12)]),
    definition(step("x", allow_failure=True), step("y"), step("z", parents=["x", "y"])),
]


def same(left: Frontier, right: Frontier) -> bool:
    keep = {k: v for k, v in left.by_status.items() if v}
    return (keep == {k: v for k, v in right.by_status.items() if v} and left.ready == right.ready
            and left.attention == right.attention and left.jobs_to_retry() == right.jobs_to_retry())


def walk(workflow: Workflow, rng: random.Random) -> None:
    for tick in range(200):
        state = workflow.state
        now = at(tick + 1)
        active = [j for j in state.jobs.values() if j.status in JOB_ACTIVE]
        failed = [j for j in state.jobs.values()
                  if j.status in JOB_FAILED and state.steps[j.step_id].jobs[j.index] == j.job_id]
        roll = rng.random()
        try:
            if roll < 0.05:
                workflow.pause(now=now)
            elif roll < 0.12:
                workflow.resume(now=now)
            elif roll < 0.18 and failed:
                workflow.retry_job(rng.choice(failed).job_id, now=now)
            elif roll < 0.19 and tick > 40:
                workflow.stop(now=now)
            elif active:
                chosen = rng.choice(active)
                if rng.random() < 0.3:
                    workflow.record_error(chosen.job_id, "boom", now=now, cause=f"m{tick}")
                else:
                    workflow.record_completed(chosen.job_id, now=now, cause=f"m{tick}", outputs={"n": tick})
            elif state.status == "paused":
                workflow.resume(now=now)
            elif not failed:
                return
        except Rejected:
            pass


def full_scan_decisions(state: WorkflowState) -> list[str]:
    """What the steps say a scan of every step would act on: the frontier's own sets, rebuilt."""
    fresh = Frontier(state)
    return sorted(fresh.steps_to_decide())


@pytest.mark.parametrize("seed", range(40))
def test_the_frontier_follows_every_event(seed: int) -> None:
    rng = random.Random(seed)
    flow = FLOWS[seed % len(FLOWS)]
    parameters = {"flag": bool(seed % 2)} if "flag" in {p.id for p in flow.parameters} else {}
    workflow = Workflow.start(uuid.UUID(int=seed + 1), flow, parameters, now=T0)
    walk(workflow, rng)
    history = workflow.collect_events()
    assert len(history) > 3

    state: WorkflowState | None = None
    for event in history:
        state = evolve(state, event)
        kept = state.frontier  # built at the first event, then kept by evolve
        assert same(kept, Frontier(state)), (seed, type(event).__name__)
        assert sorted(kept.steps_to_decide()) == full_scan_decisions(state)
    assert state is not None and state.status == workflow.state.status


def test_a_stop_drops_the_frontier_and_a_copy_builds_its_own() -> None:
    workflow = Workflow.start(uuid.UUID(int=7), FLOWS[1], {}, now=T0)
    first = workflow.state.frontier
    workflow.record_completed(workflow.state.steps["s0"].jobs[0], now=at(1))
    assert workflow.state.frontier is first and "s1" in first.by_status["processing"]
    workflow.stop(now=at(2))
    assert workflow.state.frontier is not first
    assert workflow.state.frontier.steps_to_decide() == set()
    assert isinstance(workflow.collect_events()[-1], ev.WorkflowStopped)
