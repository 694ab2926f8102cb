"""What the fault tests share: counts (CI vs soak), workflow shapes, and the exactly-once
audit of the event log."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from stepflow.engine import events as ev
from stepflow.engine.definitions import WorkflowDefinition, build_definition

HERE = Path(__file__).resolve().parent
FAULT_WORKERS = f"{HERE / 'fault_workers.py'}:faults"
SOAK = 1  # set by conftest: 10 (or $STEPFLOW_SOAK) with --soak
FIGURES: dict[str, dict[str, Any]] = {}

TERMINAL = (ev.JobCompleted, ev.JobErrored, ev.JobTimedOut, ev.JobStopped, ev.JobUnroutable)


def scaled(ci: int) -> int:
    return ci * SOAK


def figures(name: str, **values: Any) -> None:
    FIGURES.setdefault(name, {}).update(values)


def pipeline(fan: int = 3, timeout_s: float | None = None, jitter: float = 0.01) -> WorkflowDefinition:
    """a -> fan-out of `fan` b jobs -> join: 2 + fan jobs, several orders per outbox batch."""
    return build_definition({
        "identifier": "fault-pipeline",
        "parameters": [{"id": "name", "type": "string"},
                       {"id": "items", "type": "array_of_strings",
                        "default": [f"i{n}" for n in range(fan)]}],
        "steps": [
            {"id": "a", "job_type": "fault_a", "parameters": {"name": "{workflow.name}", "jitter": jitter},
             "timeout_s": timeout_s, "retry": {"max_attempts": 3, "backoff_s": 0.1}},
            {"id": "fan", "job_type": "fault_b", "parents": ["a"], "fan_out": "{workflow.items}",
             "parameters": {"name": "{workflow.name}", "item": "{item}", "jitter": jitter}, "outputs": ["item"],
             "timeout_s": timeout_s, "retry": {"max_attempts": 3, "backoff_s": 0.1}},
            {"id": "join", "job_type": "fault_a", "parents": ["fan"],
             "parameters": {"name": "{steps.fan.outputs.item}", "jitter": jitter},
             "timeout_s": timeout_s, "retry": {"max_attempts": 3, "backoff_s": 0.1}},
        ],
    })


@dataclass
class Audit:
    """Exactly-once, read from the event log of each workflow."""

    workflows: int = 0
    completed: int = 0
    jobs: int = 0
    jobs_completed: int = 0
    jobs_lost: int = 0  # submitted, never ended, in a workflow that is over or should be
    doubled: int = 0  # a transition recorded more than once
    gaps: int = 0  # versions not 1..n
    problems: list[str] = field(default_factory=list)

    def add(self, workflow_id: UUID, history: Iterable[ev.Event]) -> None:
        events = list(history)
        self.workflows += 1
        versions = [e.originator_version for e in events]
        if versions != list(range(1, len(events) + 1)):
            self.gaps += 1
            self.problems.append(f"{workflow_id}: versions {versions[:10]}...")
        submitted = Counter(e.job_id for e in events if isinstance(e, ev.JobSubmitted))
        ended = Counter(e.job_id for e in events if isinstance(e, TERMINAL))
        completed = Counter(e.job_id for e in events if isinstance(e, ev.JobCompleted))
        steps = Counter(e.step_id for e in events if isinstance(e, ev.StepCompleted))
        final = Counter(type(e).__name__ for e in events
                        if isinstance(e, (ev.WorkflowCompleted, ev.WorkflowFailed, ev.WorkflowStarted)))
        # a broker message (its id is the cause) applied twice would show here
        causes = Counter(e.cause for e in events if e.cause and isinstance(e, (*TERMINAL, ev.JobProgressed)))
        self.jobs += len(submitted)
        self.jobs_completed += len(completed)
        for kind, counts in (("JobSubmitted", submitted), ("terminal", ended), ("StepCompleted", steps), ("", final)):
            for key, n in counts.items():
                if n > 1:
                    self.doubled += n - 1
                    self.problems.append(f"{workflow_id}: {kind or key} {key} x{n}")
        for cause, n in causes.items():
            if n > 1 and not cause.startswith("timeout:"):
                self.doubled += n - 1
                self.problems.append(f"{workflow_id}: cause {cause} applied x{n}")
        lost = [job for job in submitted if job not in ended]
        self.jobs_lost += len(lost)
        if lost:
            self.problems.append(f"{workflow_id}: jobs never ended {lost}")
        if final["WorkflowCompleted"] == 1:
            self.completed += 1
        else:
            self.problems.append(f"{workflow_id}: not completed ({dict(final)})")

    def check(self) -> None:
        assert not self.problems, "\n".join(self.problems[:30])
        assert self.completed == self.workflows and self.jobs_lost == 0 and self.doubled == 0 and self.gaps == 0


def audit(engine: Any, workflow_ids: Iterable[UUID]) -> Audit:
    result = Audit()
    for workflow_id in workflow_ids:
        result.add(workflow_id, engine.history(workflow_id))
    return result


def wait_all_final(engine: Any, workflow_ids: list[UUID], timeout: float, context: Callable[[], str]) -> None:
    from stepflow.engine.statuses import WORKFLOW_FINAL

    deadline = time.monotonic() + timeout
    pending = list(workflow_ids)
    while pending:
        pending = [w for w in pending if engine.workflow_state(w).status not in WORKFLOW_FINAL]
        if not pending:
            return
        if time.monotonic() > deadline:
            states = {str(w)[:8]: {j.job_id[:6]: j.status for j in engine.workflow_state(w).jobs.values()}
                      for w in pending[:5]}
            raise AssertionError(f"{len(pending)} of {len(workflow_ids)} workflows not final after "
                                 f"{timeout}s: {states}\n{context()}")
        time.sleep(0.1)


def ready(rabbit: Any, procs: Any, timeout: float = 30, **queues: int) -> None:
    """Wait until each queue has that many consumers (the processes are up)."""
    import asyncio

    async def wait() -> None:
        for queue, consumers in queues.items():
            await rabbit.wait_depth(queue, consumers=consumers, timeout=timeout)

    try:
        asyncio.run(wait())
    except AssertionError as error:
        raise AssertionError(f"{error}\n{procs.logs()}") from None


def all_final(engine: Any, workflow_ids: Iterable[UUID]) -> bool:
    from stepflow.engine.statuses import WORKFLOW_FINAL

    return all(engine.workflow_state(w).status in WORKFLOW_FINAL for w in workflow_ids)
