"""The Workflow aggregate: commands check a fact against the state, record it, then settle.

A command either records its fact (and the decisions that follow from it), records nothing
(the message was already applied: same message id, or a late progression), or raises
`Rejected` with a reason the adapter can quarantine. It never does I/O.

The class satisfies what `eventsourcing` asks of an aggregate: `id`, `version` and
`collect_events()`; the repository rebuilds it with `project_workflow`. Commands arrive as
methods (tests, benchmarks) or as data (`handle`, for the batches the application runs); both
stay in this one class, a little over 300 lines, so every rule of a command is read in one
place.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from functools import singledispatchmethod
from typing import Any, Literal
from uuid import UUID

from stepflow.engine import commands as cmd
from stepflow.engine import events as ev
from stepflow.engine.decisions import decide
from stepflow.engine.model import WorkflowDefinition
from stepflow.engine.parameters import resolve_parameters
from stepflow.engine.snapshots import WorkflowSnapshot
from stepflow.engine.state import WorkflowState, evolve
from stepflow.engine.statuses import JOB_ACTIVE, JOB_FAILED, WORKFLOW_FINAL

Ignored = Literal["duplicate", "late", "late_progress"]  # recorded nothing new, on purpose


class Rejected(ValueError):
    """A command that makes no sense for this workflow; nothing was recorded.

    `kind` says why, for the quarantine record: `unknown` (no such job), `conflicting_duplicate`
    (an applied message id with another body), `refused` (anything else).
    """

    def __init__(self, reason: str, *, kind: str = "refused", applied_digest: str | None = None) -> None:
        super().__init__(reason)
        self.kind = kind
        self.applied_digest = applied_digest


class Workflow:
    def __init__(self, state: WorkflowState) -> None:
        self.state = state
        self._pending: list[ev.Event] = []

    @property
    def id(self) -> UUID:
        return self.state.id

    @property
    def version(self) -> int:
        return self.state.version

    def collect_events(self) -> list[ev.Event]:
        pending, self._pending = self._pending, []
        return pending

    # --- commands ----------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        workflow_id: UUID,
        definition: WorkflowDefinition,
        parameters: dict[str, Any],
        *,
        now: datetime,
        labels: Iterable[str] = (),
        actor: str | None = None,
        cause: str | None = None,
        number: int | None = None,
    ) -> Workflow:
        started = ev.WorkflowStarted(
            originator_id=workflow_id,
            originator_version=1,
            timestamp=now,
            definition=definition,
            parameters=resolve_parameters(definition, parameters),
            labels=tuple(labels),
            actor=actor,
            cause=cause,
            number=number,
        )
        workflow = cls(evolve(None, started))
        workflow._pending.append(started)
        workflow._settle(now)
        return workflow

    def record_progress(
        self, job_id: str, progression: int, *, now: datetime, cause: str | None = None,
        message: str | None = None, worker: str | None = None, digest: str | None = None,
    ) -> Ignored | None:
        if self._seen(cause, digest):
            return "duplicate"
        job = self._job(job_id)
        if job.status not in JOB_ACTIVE or self.state.status in WORKFLOW_FINAL:
            return "late_progress"  # may overtake a completion on another queue: counted, not kept
        self._record(ev.JobProgressed, now, cause, None, job_id=job_id,
                     progression=max(0, min(100, progression)), message=message, worker=worker,
                     digest=digest)
        return None

    def record_completed(
        self, job_id: str, *, now: datetime, cause: str | None = None,
        outputs: dict[str, Any] | None = None, destination_paths: Iterable[str] = (),
        execution_duration: float | None = None, worker: str | None = None, digest: str | None = None,
    ) -> Ignored | None:
        if self._seen(cause, digest):
            return "duplicate"
        if self._late(job_id, "completed", now, cause, digest, outputs=outputs or {}, worker=worker):
            return "late"
        self._record(ev.JobCompleted, now, cause, None, job_id=job_id, outputs=outputs or {},
                     destination_paths=tuple(destination_paths),
                     execution_duration=execution_duration, worker=worker, digest=digest)
        return None

    def record_error(
        self, job_id: str, message: str, *, now: datetime, cause: str | None = None,
        kind: str | None = None, execution_duration: float | None = None, worker: str | None = None,
        digest: str | None = None,
    ) -> Ignored | None:
        if self._seen(cause, digest):
            return "duplicate"
        if self._late(job_id, "error", now, cause, digest, message=message, worker=worker):
            return "late"
        self._record(ev.JobErrored, now, cause, None, job_id=job_id, message=message, kind=kind,
                     execution_duration=execution_duration, worker=worker, digest=digest)
        return None

    def record_stopped(self, job_id: str, *, now: datetime, cause: str | None = None, reason: str = "",
                       digest: str | None = None) -> Ignored | None:
        if self._seen(cause, digest):
            return "duplicate"
        if self._late(job_id, "stopped", now, cause, digest, message=reason):
            return "late"  # e.g. the answer to our own stop order, after the workflow stopped it
        self._record(ev.JobStopped, now, cause, None, job_id=job_id, reason=reason, digest=digest)
        return None

    def record_unroutable(self, job_id: str, job_type: str, *, now: datetime, cause: str | None = None,
                          digest: str | None = None) -> Ignored | None:
        if self._seen(cause, digest):
            return "duplicate"
        if self._late(job_id, "unroutable", now, cause, digest, message=f"no queue for {job_type}"):
            return "late"
        self._record(ev.JobUnroutable, now, cause, None, job_id=job_id, job_type=job_type, digest=digest)
        return None

    def record_timeout(self, job_id: str, *, now: datetime, cause: str | None = None) -> Ignored | None:
        if self._seen(cause):
            return "duplicate"
        job = self._job(job_id)
        if job.status not in JOB_ACTIVE or job.timeout_s is None:
            return "late"
        self._record(ev.JobTimedOut, now, cause, None, job_id=job_id, timeout_s=job.timeout_s)
        return None

    def retry_job(self, job_id: str, *, now: datetime, actor: str | None = None, cause: str | None = None) -> None:
        if self._seen(cause):
            return
        job = self._job(job_id)
        if self.state.steps[job.step_id].jobs[job.index] != job_id:
            raise Rejected(f"job {job_id} was already retried; retry its latest attempt")
        if job.status not in JOB_FAILED:
            raise Rejected(f"job {job_id} is {job.status}; only an errored, stopped or unroutable job can be retried")
        if self.state.status not in ("running", "paused", "error"):
            raise Rejected(f"workflow is {self.state.status}")
        self._record(ev.JobRetryRequested, now, cause, actor, job_id=job_id)

    def pause(self, *, now: datetime, actor: str | None = None, cause: str | None = None) -> None:
        if self._seen(cause) or self.state.status == "paused":
            return
        self._expect_status("running", "pause")
        self._record(ev.WorkflowPaused, now, cause, actor)

    def resume(self, *, now: datetime, actor: str | None = None, cause: str | None = None) -> None:
        if self._seen(cause) or self.state.status == "running":
            return
        self._expect_status("paused", "resume")
        self._record(ev.WorkflowResumed, now, cause, actor)

    def stop(self, *, now: datetime, reason: str = "", actor: str | None = None, cause: str | None = None) -> None:
        if self._seen(cause) or self.state.status == "stopped":
            return
        if self.state.status in WORKFLOW_FINAL:
            raise Rejected(f"workflow is already {self.state.status}")
        self._record(ev.WorkflowStopped, now, cause, actor, reason=reason, jobs=tuple(self.active_jobs()))

    def delete(self, *, now: datetime, actor: str | None = None, cause: str | None = None) -> None:
        if self._seen(cause) or self.state.status == "deleted":
            return
        self._record(ev.WorkflowDeleted, now, cause, actor, jobs=tuple(self.active_jobs()))

    # --- commands as data: what `WorkflowEngine.execute` runs ------------------------------

    @singledispatchmethod
    def handle(self, command: cmd.Command, now: datetime) -> Ignored | None:
        """Run one command with the method above that it names; what it ignored, if anything."""
        raise TypeError(f"unknown command {type(command).__name__}")

    @handle.register
    def _(self, c: cmd.RecordProgress, now: datetime) -> Ignored | None:
        return self.record_progress(c.job_id, c.progression, now=now, cause=c.cause, message=c.message,
                                    worker=c.worker, digest=c.digest)

    @handle.register
    def _(self, c: cmd.RecordCompleted, now: datetime) -> Ignored | None:
        return self.record_completed(c.job_id, now=now, cause=c.cause, outputs=c.outputs,
                                     destination_paths=c.destination_paths,
                                     execution_duration=c.execution_duration, worker=c.worker, digest=c.digest)

    @handle.register
    def _(self, c: cmd.RecordError, now: datetime) -> Ignored | None:
        return self.record_error(c.job_id, c.message, now=now, cause=c.cause, kind=c.kind,
                                 execution_duration=c.execution_duration, worker=c.worker, digest=c.digest)

    @handle.register
    def _(self, c: cmd.RecordStopped, now: datetime) -> Ignored | None:
        return self.record_stopped(c.job_id, now=now, cause=c.cause, reason=c.reason, digest=c.digest)

    @handle.register
    def _(self, c: cmd.RecordUnroutable, now: datetime) -> Ignored | None:
        return self.record_unroutable(c.job_id, c.job_type, now=now, cause=c.cause, digest=c.digest)

    @handle.register
    def _(self, c: cmd.RecordTimeout, now: datetime) -> Ignored | None:
        return self.record_timeout(c.job_id, now=now, cause=c.cause)

    @handle.register
    def _(self, c: cmd.RetryJob, now: datetime) -> None:
        self.retry_job(c.job_id, now=now, actor=c.actor, cause=c.cause)

    @handle.register
    def _(self, c: cmd.PauseWorkflow, now: datetime) -> None:
        self.pause(now=now, actor=c.actor, cause=c.cause)

    @handle.register
    def _(self, c: cmd.ResumeWorkflow, now: datetime) -> None:
        self.resume(now=now, actor=c.actor, cause=c.cause)

    @handle.register
    def _(self, c: cmd.StopWorkflow, now: datetime) -> None:
        self.stop(now=now, reason=c.reason, actor=c.actor, cause=c.cause)

    @handle.register
    def _(self, c: cmd.DeleteWorkflow, now: datetime) -> None:
        self.delete(now=now, actor=c.actor, cause=c.cause)

    # --- mechanics ---------------------------------------------------------------------

    def active_jobs(self) -> list[str]:
        return [j.job_id for j in self.state.jobs.values() if j.status in JOB_ACTIVE]

    def applied(self, cause: str | None, digest: str | None = None) -> bool:
        """This very message (same id, same body) was applied here: read only, nothing raised."""
        try:
            return self._seen(cause, digest)
        except Rejected:
            return False

    def _seen(self, cause: str | None, digest: str | None = None) -> bool:
        """True for a message already applied; `Rejected` when its id was applied with
        another body (a producer reusing ids, or a forgery): that is no redelivery."""
        if cause is None or cause not in self.state.seen:
            return False
        applied = self.state.digests.get(cause)
        if digest is not None and applied is not None and applied != digest:
            raise Rejected(f"message id {cause} was applied with body sha256:{applied}; this body is "
                           f"sha256:{digest}", kind="conflicting_duplicate", applied_digest=applied)
        return True

    def _job(self, job_id: str) -> Any:
        try:
            return self.state.jobs[job_id]
        except KeyError:
            raise Rejected(f"workflow {self.id} has no job {job_id}", kind="unknown") from None

    def _late(self, job_id: str, answer: str, now: datetime, cause: str | None, digest: str | None,
              **fields: Any) -> bool:
        """Record an answer for a job that is no longer running as `LateAnswerReceived`."""
        job = self._job(job_id)
        if job.status in JOB_ACTIVE:
            return False
        self._apply(ev.LateAnswerReceived(
            originator_id=self.id, originator_version=self.version + 1, timestamp=now, cause=cause,
            job_id=job_id, answer=answer, job_status=job.status, digest=digest, **fields,
        ))
        return True

    def _expect_status(self, status: str, what: str) -> None:
        if self.state.status != status:
            raise Rejected(f"cannot {what} a workflow that is {self.state.status}")

    def _record(self, cls: type[ev.Event], now: datetime, cause: str | None, actor: str | None, **fields: Any) -> None:
        event = cls(originator_id=self.id, originator_version=self.version + 1, timestamp=now,
                    cause=cause, actor=actor, **fields)
        self._apply(event)
        self._settle(now)

    def _apply(self, event: ev.Event) -> None:
        self.state = evolve(self.state, event)
        self._pending.append(event)

    def _settle(self, now: datetime) -> None:
        while decisions := decide(self.state, now):
            for event in decisions:
                self._apply(event)


def project_workflow(workflow: Workflow | None, events: Iterable[ev.Event]) -> Workflow | None:
    """Fold stored events (or a snapshot then events) into a Workflow for the repository."""
    state = workflow.state if workflow is not None else None
    for event in events:
        if isinstance(event, WorkflowSnapshot):
            state = event.restore()
        else:
            state = evolve(state, event)
    return Workflow(state) if state is not None else None

