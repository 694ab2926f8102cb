"""The messages a worker publishes: job answers, announcements, status.

Message ids are part of the protocol, not decoration: an answer's id is `<job id>:<status>`,
so a job answered twice (a redelivered order) is recognised by the backend as a duplicate;
announcements get fresh ids, since each one is news.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from stepflow.adapters import protocol as p
from stepflow.sdk.context import JobContext
from stepflow.sdk.handlers import Registered
from stepflow.sdk.orders import INVALID_ORDER

SDK_VERSION = "0.1.0"


def result(ctx: JobContext, instance_id: str, status: str, started: float, *,
           outputs: dict[str, Any] | None = None, message: str | None = None,
           kind: str | None = None) -> p.Message:
    """The answer to a job that ran here: completed, error or stopped."""
    parameters = p.to_parameters(outputs or {})
    if message is not None:
        parameters.append(p.Parameter(id="message", type="string", value=message))
    body = p.JobResult(
        job_id=ctx.wire_job_id, status=status, parameters=parameters,
        execution_duration=round(time.monotonic() - started, 6), workflow_id=ctx.workflow_id,
        error_kind=kind, instance_id=instance_id,
    )
    return p.Message(
        routing_key=f"job_{status}" if status != "error" else p.JOB_ERROR,
        body=p.encoder.encode(body),
        message_id=f"{ctx.job_id}:{status}",
        headers={"workflow_id": ctx.workflow_id, "job_type": ctx.job_type},
    )


def invalid_order(instance_id: str, job_id: str, workflow_id: str, job_type: str, reason: str) -> p.Message:
    """The answer to an order that could not be read, but whose ids could be told."""
    body = p.JobResult(
        job_id=job_id, status="error", workflow_id=workflow_id, error_kind=INVALID_ORDER,
        instance_id=instance_id, execution_duration=0.0,
        parameters=[p.Parameter(id="message", type="string", value=reason)],
    )
    return p.Message(routing_key=p.JOB_ERROR, body=p.encoder.encode(body), message_id=f"{job_id}:error",
                     headers={"workflow_id": workflow_id, "job_type": job_type})


def discovery(*, instance_id: str, label: str, description: str, version: str, started_at: datetime,
              handlers: Mapping[str, Registered], activity: str) -> p.Message:
    """The worker's announcement (also its heartbeat): who it is and what it takes."""
    body = p.WorkerDiscovery(
        instance_id=instance_id,
        queue_name=",".join(handlers),
        direct_messaging_queue_name=f"{p.DIRECT_MESSAGING}_{instance_id}",
        label=label, description=description, version=version, sdk_version=SDK_VERSION,
        parameters={t: r.schema() for t, r in handlers.items()},
        job_types=list(handlers), host=socket.gethostname(), started_at=started_at,
        activity=activity,  # type: ignore[arg-type]
    )
    return p.Message(
        routing_key=p.WORKER_DISCOVERY, body=p.encoder.encode(body),
        message_id=f"{instance_id}:discovery:{uuid.uuid4().hex}",
    )


def status(instance_id: str, busy: bool) -> p.Message:
    """The answer to a `status` order."""
    body = p.WorkerStatus(
        worker=p.WorkerActivity(activity="Busy" if busy else "Idle",
                                system_info={"pid": os.getpid(), "host": socket.gethostname()}),
        instance_id=instance_id,
    )
    return p.Message(
        routing_key=p.WORKER_STATUS, body=p.encoder.encode(body),
        message_id=f"{instance_id}:status:{uuid.uuid4().hex}",
    )
