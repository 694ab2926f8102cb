"""`decide`: what a workflow does next, as a pure function of its state.

Called after every fact until it returns nothing. It reads the state only, so replaying the
facts of a stored workflow and calling it again must give the decisions that were stored:
this is what `stepflow replay --check` verifies.

Rules, in order:
1. an errored job is retried while its step's policy allows (`JobRetryScheduled` then a new
   `JobSubmitted` attempt with a backoff delay); an operator's retry request is honoured;
2. a step whose parents are all completed or skipped starts: skipped if its condition is
   false, else one job (or one per fan-out item; no item completes it at once);
3. a running step completes when its current jobs all completed; it fails at its first job
   that failed for good, unless `allow_failure`, where it completes once all jobs ended;
4. the workflow fails when a step failed, and completes when every step is done.
Nothing is decided while the workflow is paused, stopped, deleted or finished.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

from stepflow.engine import events as ev
from stepflow.engine import wire
from stepflow.engine.failures import step_failure, workflow_failure
from stepflow.engine.model import StepDefinition
from stepflow.engine.state import JobState, StepState, WorkflowState
from stepflow.engine.statuses import JOB_FAILED, STEP_DONE
from stepflow.engine.templates import TemplateError, render, truth

MAX_PRIORITY = 9
NOTIFICATION_TIMEOUT_S = 60.0  # a notification job always has a deadline, so a crash mid-call retries it
NON_RETRYABLE_KINDS = frozenset({"unroutable", "stopped"})

Emit = Callable[..., ev.Event]


def job_id_for(workflow_id: uuid.UUID, step_id: str, index: int, attempt: int) -> str:
    """Deterministic, so a decision re-made after a crash names the same job.

    A uuid5 of the workflow id and the job's place (step, fan-out index, attempt): the same
    order published twice carries the same id and message id, which is what lets workers
    and the backend recognise a duplicate.
    """
    return str(uuid.uuid5(workflow_id, f"{step_id}/{index}/{attempt}"))


def decide(state: WorkflowState, now: datetime) -> list[ev.Event]:
    if state.status != "running":
        return []
    out: list[ev.Event] = []
    emit = _emitter(state, now, out)
    _retries(state, emit)
    if out:
        return out
    frontier = state.frontier
    for step_state in sorted((state.steps[s] for s in frontier.steps_to_decide()), key=lambda s: s.order):
        step = state.definition.step(step_state.step_id)
        if step_state.status == "waiting":
            _maybe_start(state, step, step_state, emit)
        elif step_state.status == "processing":
            _maybe_finish(state, step, step_state, emit)
    if out:
        return out
    failed = [state.steps[s] for s in frontier.steps_with("error")]
    if failed:
        first = min(failed, key=lambda s: s.order)
        emit(ev.WorkflowFailed, reason=workflow_failure(first.step_id, first.reason))
    elif sum(len(frontier.steps_with(status)) for status in STEP_DONE) == len(state.steps):
        emit(ev.WorkflowCompleted)
    return out


def _emitter(state: WorkflowState, now: datetime, out: list[ev.Event]) -> Emit:
    submitted = 0  # jobs decided in this pass, not yet in `state.jobs`

    def emit(cls: type[ev.Event], **fields: Any) -> ev.Event:
        nonlocal submitted
        if cls is ev.JobSubmitted:
            # its place among the workflow's jobs: a function of the state, so a re-decision
            # after a crash gives the same wire id
            fields["wire_id"] = wire.wire_id(state.number, len(state.jobs) + submitted)
            submitted += 1
        event = cls(
            originator_id=state.id,
            originator_version=state.version + len(out) + 1,
            timestamp=now,
            **fields,
        )
        out.append(event)
        return event

    return emit


def retryable(state: WorkflowState, job: JobState) -> bool:
    if job.status != "error":  # first: `_retries` asks this of every job after every event
        return False
    policy = state.definition.step(job.step_id).retry
    return (
        job.attempt < policy.max_attempts
        and job.error_kind not in NON_RETRYABLE_KINDS
        and job.error_kind not in policy.non_retryable
    )


def _retries(state: WorkflowState, emit: Emit) -> None:
    for job in [state.jobs[job_id] for job_id in state.frontier.jobs_to_retry()]:
        if job.status == "retry_requested":
            delay = 0.0
        elif retryable(state, job):
            delay = state.definition.step(job.step_id).retry.delay_before(job.attempt + 1)
        else:
            continue
        attempt = job.attempt + 1
        next_id = job_id_for(state.id, job.step_id, job.index, attempt)
        emit(ev.JobRetryScheduled, job_id=job.job_id, next_job_id=next_id, attempt=attempt, delay_s=delay)
        _submit(state, state.definition.step(job.step_id), job.index, attempt, job.parameters, emit, delay)


_UNBOUND: Any = object()  # a fan-out item may itself be None


def template_scope(state: WorkflowState, *, item: Any = _UNBOUND, run: bool = False) -> dict[str, Any]:
    """What templates read: start parameters and completed steps' outputs, plus `{item}` for
    a fan-out job and `{run.X}` (see `validation.RUN_FIELDS`) for a hook.

    The one place the scope is built, so a step and a hook read the same names the same way.
    """
    scope: dict[str, Any] = {
        "workflow": state.parameters,
        "steps": _CompletedSteps(state.steps),
    }
    if item is not _UNBOUND:
        scope["item"] = item
    if run:
        scope["run"] = {"id": str(state.id), "status": state.status, "reason": state.reason or "",
                        "definition": state.definition.identifier, "version": state.definition.version}
    return scope


class _CompletedSteps(Mapping[str, dict[str, Any]]):
    """`{steps.S.outputs.NAME}`: the completed steps, looked up when a template reads one.

    A view, not a copy: building the dict of every completed step's outputs for each step
    that starts made a long workflow's steps cost O(steps) each. Validation only lets a
    template read `steps.S.outputs.NAME`, so this view itself never ends up in a job."""

    __slots__ = ("_steps",)

    def __init__(self, steps: Mapping[str, StepState]) -> None:
        self._steps = steps

    def __getitem__(self, step_id: str) -> dict[str, Any]:
        step = self._steps.get(step_id)
        if step is None or step.status != "completed":
            raise KeyError(step_id)
        return {"outputs": step.outputs}

    def __iter__(self) -> Iterator[str]:
        return (step_id for step_id, step in self._steps.items() if step.status == "completed")

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _maybe_start(state: WorkflowState, step: StepDefinition, step_state: StepState, emit: Emit) -> None:
    if not all(state.steps[p].status in STEP_DONE for p in step.parents):
        return
    try:
        scope = template_scope(state)
        if step.condition is not None and not truth(step.condition, scope):
            emit(ev.StepSkipped, step_id=step.id, reason=f"condition {step.condition!r} is false")
            return
        if step.fan_out is None:
            jobs = [render(step.job_parameters, scope)]
        else:
            items = render(step.fan_out, scope)
            if not isinstance(items, list):
                raise TemplateError(f"fan_out {step.fan_out!r} gave {type(items).__name__}, not a list")
            jobs = [render(step.job_parameters, template_scope(state, item=item)) for item in items]
    except TemplateError as error:
        emit(ev.StepFailed, step_id=step.id, reason=str(error))
        return
    if not jobs:
        emit(ev.StepCompleted, step_id=step.id, outputs=_outputs(step, []))
        return
    for index, parameters in enumerate(jobs):
        _submit(state, step, index, 1, parameters, emit, 0.0)


def _submit(
    state: WorkflowState,
    step: StepDefinition,
    index: int,
    attempt: int,
    parameters: dict[str, Any],
    emit: Emit,
    delay: float,
) -> None:
    emit(
        ev.JobSubmitted,
        job_id=job_id_for(state.id, step.id, index, attempt),
        step_id=step.id,
        index=index,
        attempt=attempt,
        job_type=step.job_type,
        parameters=parameters,
        priority=min(state.steps[step.id].order, MAX_PRIORITY),
        delay_s=delay,
        timeout_s=step.timeout_s if step.mode == "job" else step.timeout_s or NOTIFICATION_TIMEOUT_S,
        mode=step.mode,
    )


def _maybe_finish(state: WorkflowState, step: StepDefinition, step_state: StepState, emit: Emit) -> None:
    jobs = state.current_jobs(step.id)
    failed = [job for job in jobs if job.status in JOB_FAILED and not retryable(state, job)]
    if failed and not step.allow_failure:
        first = failed[0]
        emit(ev.StepFailed, step_id=step.id, reason=step_failure(first.job_id, first.status, first.error))
        return
    finished = [job for job in jobs if job.status == "completed"]
    if len(finished) + len(failed) < len(jobs):
        return
    # every job, so a fan-out's output lists stay aligned with its items (None where one failed)
    emit(ev.StepCompleted, step_id=step.id, outputs=_outputs(step, jobs), failed_jobs=len(failed))


def _outputs(step: StepDefinition, jobs: list[JobState]) -> dict[str, Any]:
    """One job: its outputs. A fan-out: each output name maps to the list, in item order."""
    if step.fan_out is None:
        return dict(jobs[0].outputs) if jobs else {}
    names: dict[str, None] = dict.fromkeys(step.outputs or ())  # declared: a list even if empty
    for job in jobs:
        names.update(dict.fromkeys(job.outputs))
    return {name: [job.outputs.get(name) for job in jobs] for name in names}
