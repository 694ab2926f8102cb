"""What a job handler sees: its `JobContext`, and `JobFailed` to fail with a kind.

These two are the whole surface a handler touches, so they live apart from the run loop:
a handler module imports them without reading how orders are taken and answered.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Protocol

import structlog

from stepflow.adapters import protocol as p
from stepflow.engine.ports import WorkerBroker

log = structlog.get_logger("stepflow.worker")


class JobFailed(Exception):
    """Raise from a handler to fail the job with a kind (e.g. 'invalid_input').

    The kind is what a step's retry policy lists in `non_retryable`; any other exception
    fails the job too, with its class name as the kind.
    """

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind


class WorkerIdentity(Protocol):
    """What a context needs of its `Worker` (naming the class would import the run loop)."""

    @property
    def instance_id(self) -> str: ...

    @property
    def run_token(self) -> str: ...


class JobContext:
    """One attempt of one job: its ids, a bound logger, and `progress`."""

    def __init__(self, worker: WorkerIdentity, broker: WorkerBroker, order: p.JobOrder, job_type: str,
                 workflow_id: str) -> None:
        self.job_id = p.job_key(order.job_id)  # text, whatever the wire carried
        self.wire_job_id = order.job_id  # as the order said it: answers say it back the same way
        self.attempt = order.attempt
        self.job_type = job_type
        self.workflow_id = workflow_id
        self._worker = worker
        self._broker = broker
        self._sent = 0
        # Unique per attempt and per run of the worker: a job redelivered to a restarted
        # worker reports progress under new ids, not ones the backend already applied.
        self._progress_prefix = f"{order.job_id}:progression:{order.attempt}:{worker.run_token}"

    @functools.cached_property
    def log(self) -> structlog.typing.FilteringBoundLogger:
        """A logger bound to the job's ids; bound on first use (most jobs never log)."""
        bound: structlog.typing.FilteringBoundLogger = log.bind(job_id=self.wire_job_id, workflow_id=self.workflow_id,
                                                                 job_type=self.job_type)
        return bound

    async def progress(self, percent: int, message: str | None = None) -> None:
        """Report progress (0-100). Confirmed by the broker before it returns."""
        self._sent += 1
        body = p.JobProgression(
            job_id=self.wire_job_id, progression=int(percent), datetime=datetime.now(UTC),
            docker_container_id=self._worker.instance_id, message=message, workflow_id=self.workflow_id,
        )
        await self._broker.publish_response(p.Message(
            routing_key=p.JOB_PROGRESSION, body=p.encoder.encode(body),
            message_id=f"{self._progress_prefix}:{self._sent}",
            headers={"workflow_id": self.workflow_id, "job_type": self.job_type},
        ))
