"""The statuses of jobs, steps and workflows, and the groups of them the rules test.

Written once, as `Literal` types, and every tuple and set derived from them, so the engine,
the views, the HTTP API and the CLI cannot disagree on what a status is, which ones are
still running, or which ones are final.
"""

from __future__ import annotations

from typing import Literal, get_args

JobStatus = Literal[
    "queued", "processing", "completed", "error", "retrying", "retry_requested", "stopped", "unroutable"
]
StepStatus = Literal["waiting", "processing", "completed", "error", "skipped", "stopped"]
WorkflowStatus = Literal["running", "paused", "completed", "error", "stopped", "deleted"]

JOB_STATUSES: tuple[JobStatus, ...] = get_args(JobStatus)
STEP_STATUSES: tuple[StepStatus, ...] = get_args(StepStatus)
WORKFLOW_STATUSES: tuple[WorkflowStatus, ...] = get_args(WorkflowStatus)

JOB_ACTIVE: frozenset[JobStatus] = frozenset({"queued", "processing"})  # a worker may still answer
JOB_FAILED: frozenset[JobStatus] = frozenset({"error", "stopped", "unroutable"})  # may be retried
# What a workflow's stop or delete stops: the active jobs and those an operator asked to retry.
JOB_HALTABLE: frozenset[JobStatus] = JOB_ACTIVE | {"retry_requested"}
STEP_OPEN: frozenset[StepStatus] = frozenset({"waiting", "processing"})  # a stop or delete stops these
STEP_DONE: frozenset[StepStatus] = frozenset({"completed", "skipped"})  # its children may start
WORKFLOW_FINAL: frozenset[WorkflowStatus] = frozenset({"completed", "error", "stopped", "deleted"})
