"""Replay: a workflow as it was at a version or a moment, and the determinism check.

`replay(engine, id, at=N)` (or `until=` a time) rebuilds both sides at that point: the
aggregate (`engine.load(id, N)`, from the latest snapshot at or before N) and the workflow
read model (the first N events through `WorkflowsProjection` into a throw-away in-memory
view; its `seq` columns are then stream versions, not notification ids). `differences`
lists any disagreement between the two, which should always be empty.

`check_determinism(engine)` re-decides every stored workflow, like Temporal's replayer:
fold the stored events with `evolve`; after each fact, call `decide` until it settles
(applying its output) and compare what it produced with the stored decisions that follow
that fact, ignoring timestamps. A rule changed since the events were written shows up as
a `Divergence` naming the workflow, the fact and both event lists. Checking stops at a
workflow's first divergence (what follows depends on it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from stepflow.engine import decisions
from stepflow.engine import events as ev
from stepflow.engine.state import WorkflowState, evolve
from stepflow.projections.models import WorkflowDetail
from stepflow.projections.queries import get_workflow
from stepflow.projections.sqlite import SQLiteViewStore
from stepflow.projections.workflows import WorkflowsProjection

MAX_SETTLE_ROUNDS = 10_000


class ReplayError(ValueError):
    """No such version or moment in the workflow's history."""


class Replayed(msgspec.Struct, kw_only=True):
    workflow_id: str
    version: int
    versions: int  # how many events the whole history has
    time: datetime  # of the event at `version`
    state: WorkflowState
    view: WorkflowDetail
    differences: list[str]


def replay(engine: Any, workflow_id: UUID, *, at: int | None = None, until: datetime | None = None) -> Replayed:
    events = engine.history(workflow_id)
    if not events:
        raise ReplayError(f"no workflow {workflow_id}")
    version = len(events)
    if until is not None:
        version = sum(1 for e in events if e.timestamp <= until)
        if version == 0:
            raise ReplayError(f"workflow {workflow_id} had not started at {until.isoformat()}")
    elif at is not None:
        if not 1 <= at <= len(events):
            raise ReplayError(f"version {at} is outside 1..{len(events)}")
        version = at
    state = engine.load(workflow_id, version).state
    view = view_at(events[:version])
    return Replayed(workflow_id=str(workflow_id), version=version, versions=len(events),
                    time=events[version - 1].timestamp, state=state, view=view,
                    differences=compare(state, view))


def view_at(events: Sequence[ev.Event]) -> WorkflowDetail:
    """The workflow read model after these events (one stream, from its start)."""
    store = SQLiteViewStore(":memory:")
    try:
        projection = WorkflowsProjection()
        store.ensure(projection)
        with store.write() as tx:
            projection.apply(tx, [(e.originator_version, e) for e in events])
        detail = get_workflow(store, events[0].originator_id)
        assert detail is not None
        return detail
    finally:
        store.close()


def compare(state: WorkflowState, view: WorkflowDetail) -> list[str]:
    """Where the read model disagrees with the aggregate's state (empty: they agree)."""
    out: list[str] = []

    def check(what: str, ours: Any, theirs: Any) -> None:
        if ours != theirs:
            out.append(f"{what}: view {ours!r}, aggregate {theirs!r}")

    w = view.workflow
    check("workflow status", w.status, state.status)
    check("workflow reason", w.reason, state.reason)
    check("workflow version", w.version, state.version)
    check("workflow labels", w.labels, state.labels)
    check("workflow ended", w.ended_at is not None, state.ended_at is not None)
    steps = {s.step_id: s for s in view.steps}
    check("steps", sorted(steps), sorted(state.steps))
    for step_id, step in state.steps.items():
        if step_id in steps:
            check(f"step {step_id} status", steps[step_id].status, step.status)
            check(f"step {step_id} reason", steps[step_id].reason, step.reason)
            counts: dict[str, int] = {}
            for job in state.jobs.values():
                if job.step_id == step_id:
                    counts[job.status] = counts.get(job.status, 0) + 1
            check(f"step {step_id} job counts", steps[step_id].job_counts, counts)
    jobs = {j.job_id: j for j in view.jobs}
    check("jobs", sorted(jobs), sorted(state.jobs))
    for job_id, job in state.jobs.items():
        if job_id in jobs:
            mine = jobs[job_id]
            for name in ("status", "attempt", "progression", "worker", "error", "error_kind",
                         "execution_duration", "message"):
                check(f"job {job_id} {name}", getattr(mine, name), getattr(job, name))
            check(f"job {job_id} started", mine.started_at is not None, job.started_at is not None)
            check(f"job {job_id} ended", mine.ended_at is not None, job.ended_at is not None)
    return out


# --- determinism --------------------------------------------------------------------------


class Divergence(msgspec.Struct, frozen=True, kw_only=True):
    workflow_id: str
    version: int  # of the fact after which the decisions differ
    fact: str
    stored: list[dict[str, Any]]
    produced: list[dict[str, Any]]
    message: str


class DeterminismReport(msgspec.Struct, kw_only=True):
    workflows: int = 0
    events: int = 0
    divergences: list[Divergence] = []

    @property
    def ok(self) -> bool:
        return not self.divergences


def _plain(event: ev.Event) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(event)
    data.pop("timestamp", None)
    return data


def check_workflow(events: Sequence[ev.Event]) -> Divergence | None:
    """Re-decide one stored history; the first divergence, or None if it is deterministic."""
    state: WorkflowState | None = None
    i, n = 0, len(events)
    while i < n:
        fact = events[i]
        state = evolve(state, fact)
        i += 1
        stored = []
        while i < n and isinstance(events[i], ev.DECISIONS):
            stored.append(events[i])
            i += 1
        produced: list[ev.Event] = []
        for _ in range(MAX_SETTLE_ROUNDS):
            decided = decisions.decide(state, fact.timestamp)
            if not decided:
                break
            for event in decided:
                state = evolve(state, event)
            produced.extend(decided)
        else:
            return _divergence(fact, stored, produced, "decide did not settle")
        if [_plain(e) for e in produced] != [_plain(e) for e in stored]:
            return _divergence(fact, stored, produced, _first_difference(stored, produced))
    return None


def _divergence(fact: ev.Event, stored: Sequence[ev.Event], produced: Sequence[ev.Event],
                message: str) -> Divergence:
    return Divergence(workflow_id=str(fact.originator_id), version=fact.originator_version,
                      fact=type(fact).__name__, stored=[_plain(e) for e in stored],
                      produced=[_plain(e) for e in produced], message=message)


def _first_difference(stored: Sequence[ev.Event], produced: Sequence[ev.Event]) -> str:
    for index, (a, b) in enumerate(zip(stored, produced)):
        da, db = _plain(a), _plain(b)
        if da != db:
            fields = sorted(k for k in set(da) | set(db) if da.get(k) != db.get(k))
            detail = ", ".join(f"{k}: stored {da.get(k)!r}, now {db.get(k)!r}" for k in fields)
            return f"decision {index + 1} (v{a.originator_version}) differs: {detail}"
    if len(stored) > len(produced):
        return f"stored {len(stored)} decision(s), re-deciding gives {len(produced)}: " \
               f"{type(stored[len(produced)]).__name__} no longer decided"
    return f"stored {len(stored)} decision(s), re-deciding gives {len(produced)}: " \
           f"new {type(produced[len(stored)]).__name__}"


def workflow_ids(engine: Any, batch_size: int = 1000) -> Iterable[UUID]:
    """Every workflow in the store, in the order they started (from the notification log)."""
    position = 0
    while True:
        batch = engine.recorder.select_notifications(position, batch_size, topics=["WorkflowStarted"],
                                                     inclusive_of_start=False)
        if not batch:
            return
        for notification in batch:
            yield notification.originator_id
        position = batch[-1].id


def check_determinism(engine: Any, ids: Iterable[UUID] | None = None,
                      on_progress: Callable[[int], None] | None = None) -> DeterminismReport:
    """Re-decide the given workflows (default: all in the store) and report divergences."""
    report = DeterminismReport()
    for workflow_id in ids if ids is not None else workflow_ids(engine):
        events = engine.history(workflow_id)
        report.workflows += 1
        report.events += len(events)
        divergence = check_workflow(events)
        if divergence is not None:
            report.divergences.append(divergence)
        if on_progress is not None:
            on_progress(report.workflows)
    return report
