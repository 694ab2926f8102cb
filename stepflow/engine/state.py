"""The state of one workflow, and `evolve`: how each event changes it.

`evolve` is the only code that changes a `WorkflowState`; it never decides anything and never
refuses an event (the log is the truth). State is a msgspec Struct so a snapshot is simply
the encoded state. It is mutated in place for speed: a fan-out of thousands of jobs would
otherwise copy the whole job table on every event.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import singledispatch
from typing import Any
from uuid import UUID

import msgspec

from stepflow.engine import events as ev
from stepflow.engine.failures import Halt, JobEnding, halt, job_failure
from stepflow.engine.graph import topological_order
from stepflow.engine.model import WorkflowDefinition
from stepflow.engine.statuses import (
    JOB_HALTABLE,
    STEP_DONE,
    STEP_OPEN,
    JobStatus,
    StepStatus,
    WorkflowStatus,
)


class JobState(msgspec.Struct, kw_only=True):
    job_id: str
    step_id: str
    index: int
    attempt: int
    job_type: str
    parameters: dict[str, Any]
    status: JobStatus = "queued"
    priority: int = 0
    timeout_s: float | None = None
    submitted_at: datetime
    not_before: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    last_activity: datetime
    progression: int = 0
    message: str | None = None
    outputs: dict[str, Any] = {}
    error: str | None = None
    error_kind: str | None = None
    worker: str | None = None
    execution_duration: float | None = None
    wire_id: int | None = None  # its integer id on the wire (`stepflow.engine.wire`)


class StepState(msgspec.Struct, kw_only=True):
    step_id: str
    order: int
    status: StepStatus = "waiting"
    jobs: list[str] = []  # the current attempt's job id, per fan-out index
    outputs: dict[str, Any] = {}
    reason: str | None = None


class WorkflowState(msgspec.Struct, kw_only=True, dict=True):
    # dict=True: room for `Frontier`, an index derived from the fields and never stored
    id: UUID
    version: int
    definition: WorkflowDefinition
    parameters: dict[str, Any]
    labels: tuple[str, ...] = ()
    status: WorkflowStatus = "running"
    steps: dict[str, StepState]
    jobs: dict[str, JobState] = {}
    seen: set[str] = set()
    digests: dict[str, str] = {}  # cause -> body digest, to tell a redelivery from a clash
    started_at: datetime
    ended_at: datetime | None = None
    reason: str | None = None
    started_by: str | None = None
    number: int | None = None  # the workflow's number, for its jobs' wire ids
    wires: dict[int, str] = {}  # wire id -> job id

    def current_jobs(self, step_id: str) -> list[JobState]:
        return [self.jobs[job_id] for job_id in self.steps[step_id].jobs]

    @property
    def frontier(self) -> Frontier:
        """What `decide` looks at, kept up to date by `evolve` (built on first use)."""
        frontier: Frontier | None = self.__dict__.get("_frontier")
        if frontier is None:
            frontier = self.__dict__["_frontier"] = Frontier(self)
        return frontier


ATTENTION: frozenset[str] = frozenset({"error", "retry_requested"})  # jobs `decide` may retry


class Frontier:
    """The few steps and jobs `decide` can act on, so that deciding costs what is open, not
    what the history holds: a 1,000-step workflow scanned 1,000 steps and every job it ever
    had after each event (three decisions per step: O(steps^2) for the whole run).

    Derived from the state and never stored (a snapshot or a copy builds it again on first
    use). `evolve` updates it for the events that change a step's or a job's status and
    drops it for any other event (a stop or a delete touches every step; an event type added
    later is safe until it is taught here).
    """

    __slots__ = ("attention", "by_status", "children", "parents", "positions", "ready", "status_of")

    def __init__(self, state: WorkflowState) -> None:
        steps = state.definition.steps
        self.parents: dict[str, tuple[str, ...]] = {step.id: tuple(step.parents) for step in steps}
        self.children: dict[str, list[str]] = {step.id: [] for step in steps}
        for step in steps:
            for parent in step.parents:
                self.children[parent].append(step.id)
        self.status_of: dict[str, str] = {}
        self.by_status: dict[str, set[str]] = {}
        self.ready: set[str] = set()  # waiting steps whose parents are all done
        for step_id in state.steps:
            self._place(state, step_id)
        for step_id in state.steps:
            self._check_ready(state, step_id)
        self.positions: dict[str, int] = {job_id: i for i, job_id in enumerate(state.jobs)}  # submission order
        self.attention: set[str] = {j.job_id for j in state.jobs.values() if j.status in ATTENTION}

    def steps_to_decide(self) -> set[str]:
        """Processing steps and waiting steps that may start."""
        return self.ready | self.by_status.get("processing", set())

    def jobs_to_retry(self) -> list[str]:
        """Errored jobs and jobs an operator asked to retry, in submission order."""
        return sorted(self.attention, key=self.positions.__getitem__)

    def steps_with(self, status: str) -> set[str]:
        return self.by_status.get(status, set())

    def step_changed(self, state: WorkflowState, step_id: str) -> None:
        self._place(state, step_id)
        self._check_ready(state, step_id)
        for child in self.children[step_id]:
            self._check_ready(state, child)

    def job_changed(self, state: WorkflowState, job_id: str) -> None:
        if job_id not in self.positions:
            self.positions[job_id] = len(self.positions)
        if state.jobs[job_id].status in ATTENTION:
            self.attention.add(job_id)
        else:
            self.attention.discard(job_id)

    def _place(self, state: WorkflowState, step_id: str) -> None:
        status = state.steps[step_id].status
        old = self.status_of.get(step_id)
        if old == status:
            return
        if old is not None:
            self.by_status[old].discard(step_id)
        self.by_status.setdefault(status, set()).add(step_id)
        self.status_of[step_id] = status

    def _check_ready(self, state: WorkflowState, step_id: str) -> None:
        if state.steps[step_id].status == "waiting" and all(
                state.steps[p].status in STEP_DONE for p in self.parents[step_id]):
            self.ready.add(step_id)
        else:
            self.ready.discard(step_id)


def initial_state(event: ev.WorkflowStarted) -> WorkflowState:
    order = topological_order(event.definition)
    return WorkflowState(
        id=event.originator_id,
        version=event.originator_version,
        definition=event.definition,
        parameters=event.parameters,
        labels=event.labels,
        steps={step_id: StepState(step_id=step_id, order=i) for i, step_id in enumerate(order)},
        started_at=event.timestamp,
        started_by=event.actor,
        number=event.number,
        seen={event.cause} if event.cause else set(),
    )


def evolve(state: WorkflowState | None, event: ev.Event) -> WorkflowState:
    """Apply one event; the first event of a stream creates the state."""
    if state is None:
        assert isinstance(event, ev.WorkflowStarted), event
        return initial_state(event)
    state.version = event.originator_version
    if event.cause:
        state.seen.add(event.cause)
        digest = getattr(event, "digest", None)
        if digest is not None:
            state.digests[event.cause] = digest
    _apply(event, state)
    frontier: Frontier | None = state.__dict__.get("_frontier")
    if frontier is not None:
        _follow(frontier, event, state)
    return state


# Events that change no step's status and at most their own job's.
_JOB_ONLY = (ev.JobProgressed, ev.JobCompleted, ev.JobErrored, ev.JobTimedOut, ev.JobUnroutable, ev.JobStopped,
             ev.JobRetryScheduled, ev.LateAnswerReceived, ev.WorkflowPaused, ev.WorkflowResumed,
             ev.WorkflowCompleted, ev.WorkflowFailed)
_STEP_ONLY = (ev.StepCompleted, ev.StepSkipped, ev.StepFailed)


def _follow(frontier: Frontier, event: ev.Event, state: WorkflowState) -> None:
    """Keep the frontier right after `event`, or drop it (rebuilt when next asked for)."""
    if isinstance(event, _STEP_ONLY):
        frontier.step_changed(state, event.step_id)
    elif isinstance(event, ev.JobSubmitted | ev.JobRetryRequested):
        frontier.job_changed(state, event.job_id)
        frontier.step_changed(state, state.jobs[event.job_id].step_id)
    elif isinstance(event, _JOB_ONLY):
        job_id = getattr(event, "job_id", None)
        if job_id is not None:
            frontier.job_changed(state, job_id)
    else:
        del state.__dict__["_frontier"]


@singledispatch
def _apply(event: ev.Event, state: WorkflowState) -> None:
    raise TypeError(f"no evolve rule for {type(event).__name__}")


@_apply.register
def _(event: ev.WorkflowStarted, state: WorkflowState) -> None:
    raise ValueError("a workflow starts once")


@_apply.register
def _(event: ev.JobSubmitted, state: WorkflowState) -> None:
    state.jobs[event.job_id] = JobState(
        job_id=event.job_id,
        step_id=event.step_id,
        index=event.index,
        attempt=event.attempt,
        job_type=event.job_type,
        parameters=event.parameters,
        priority=event.priority,
        timeout_s=event.timeout_s,
        submitted_at=event.timestamp,
        not_before=_after(event.timestamp, event.delay_s),
        last_activity=_after(event.timestamp, event.delay_s),
        wire_id=event.wire_id,
    )
    if event.wire_id is not None:
        state.wires[event.wire_id] = event.job_id
    step = state.steps[event.step_id]
    step.status = "processing"
    if event.index < len(step.jobs):
        step.jobs[event.index] = event.job_id
    else:
        step.jobs.append(event.job_id)


def _after(moment: datetime, seconds: float) -> datetime:
    return moment + timedelta(seconds=seconds) if seconds else moment


@_apply.register
def _(event: ev.JobProgressed, state: WorkflowState) -> None:
    job = state.jobs[event.job_id]
    job.status = "processing"
    job.progression = event.progression
    job.message = event.message
    job.last_activity = event.timestamp
    job.started_at = job.started_at or event.timestamp
    job.worker = event.worker or job.worker


@_apply.register
def _(event: ev.JobCompleted, state: WorkflowState) -> None:
    job = state.jobs[event.job_id]
    job.status = "completed"
    job.progression = 100
    job.outputs = event.outputs
    job.ended_at = job.last_activity = event.timestamp
    job.worker = event.worker or job.worker
    job.execution_duration = event.execution_duration


@_apply.register(ev.JobErrored)
@_apply.register(ev.JobTimedOut)
@_apply.register(ev.JobUnroutable)
@_apply.register(ev.JobStopped)
def _(event: JobEnding, state: WorkflowState) -> None:
    job = state.jobs[event.job_id]
    job.status, job.error, job.error_kind = job_failure(event)
    job.ended_at = job.last_activity = event.timestamp
    if isinstance(event, ev.JobErrored):
        job.worker = event.worker or job.worker
        job.execution_duration = event.execution_duration


@_apply.register
def _(event: ev.LateAnswerReceived, state: WorkflowState) -> None:
    pass  # kept for the record; the job had already ended


@_apply.register
def _(event: ev.JobRetryRequested, state: WorkflowState) -> None:
    job = state.jobs[event.job_id]
    job.status = "retry_requested"
    step = state.steps[job.step_id]
    step.status = "processing"
    step.reason = None
    if state.status == "error":
        state.status = "running"
        state.reason = None
        state.ended_at = None


@_apply.register
def _(event: ev.JobRetryScheduled, state: WorkflowState) -> None:
    state.jobs[event.job_id].status = "retrying"


@_apply.register
def _(event: ev.StepCompleted, state: WorkflowState) -> None:
    step = state.steps[event.step_id]
    step.status = "completed"
    step.outputs = event.outputs


@_apply.register
def _(event: ev.StepSkipped, state: WorkflowState) -> None:
    step = state.steps[event.step_id]
    step.status = "skipped"
    step.reason = event.reason


@_apply.register
def _(event: ev.StepFailed, state: WorkflowState) -> None:
    step = state.steps[event.step_id]
    step.status = "error"
    step.reason = event.reason


@_apply.register
def _(event: ev.WorkflowPaused, state: WorkflowState) -> None:
    state.status = "paused"


@_apply.register
def _(event: ev.WorkflowResumed, state: WorkflowState) -> None:
    state.status = "running"


@_apply.register(ev.WorkflowStopped)
@_apply.register(ev.WorkflowDeleted)
def _(event: Halt, state: WorkflowState) -> None:
    at = event.timestamp
    state.status, state.reason = halt(event)
    state.ended_at = state.ended_at or at
    for job in state.jobs.values():
        if job.status in JOB_HALTABLE:
            job.status = "stopped"
            job.error = state.reason
            job.ended_at = at
    for step in state.steps.values():
        if step.status in STEP_OPEN:
            step.status = "stopped"


@_apply.register
def _(event: ev.WorkflowCompleted, state: WorkflowState) -> None:
    state.status = "completed"
    state.ended_at = event.timestamp


@_apply.register
def _(event: ev.WorkflowFailed, state: WorkflowState) -> None:
    state.status = "error"
    state.reason = event.reason
    state.ended_at = event.timestamp
