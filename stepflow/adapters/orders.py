"""The wire form of what the backend sends: a stored order or a stop, as a `Message`.

Both brokers (RabbitMQ and in-process) call these at their edge, so the rest of the backend
handles typed events and never reads back a message it encoded: routing, deadlines and
notification calls read the event's fields. The shapes are the original Step Flow's
(docs/protocol.md): a `JobOrder` body, the job id as message id, the job type as routing
key, and headers a worker or an operator may filter on.
"""

from __future__ import annotations

from stepflow.adapters import protocol as p
from stepflow.engine import events as ev
from stepflow.engine.ports import StopJob


def order_message(event: ev.JobSubmitted) -> p.Message:
    order = p.JobOrder(
        job_id=event.job_id,
        parameters=p.to_parameters(event.parameters),
        workflow_id=str(event.originator_id),
        attempt=event.attempt,
        timeout_s=event.timeout_s,
    )
    headers: dict[str, object] = {"workflow_id": str(event.originator_id), "job_type": event.job_type,
                                  "step_id": event.step_id, "attempt": event.attempt}
    if event.timeout_s is not None:
        headers["timeout_s"] = event.timeout_s
    return p.Message(
        routing_key=event.job_type,
        body=p.encoder.encode(order),
        message_id=event.job_id,
        headers=headers,
        priority=event.priority,
        delay_s=event.delay_s,
    )


def stop_message(stop: StopJob) -> p.Message:
    """`stop_process`, broadcast: the backend does not track which instance holds a job, and a
    worker not holding it ignores the order."""
    return p.Message(
        routing_key="",
        body=p.encoder.encode(p.DirectOrder(type="stop_process", job_id=stop.job_id)),
        message_id=f"stop:{stop.job_id}",
        headers={"broadcast": True, "workflow_id": str(stop.workflow_id)},
    )
