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
        job_id=event.job_id if event.wire_id is None else event.wire_id,
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
    """`stop_process` to the instance last heard working on the job, by its `instance_id`
    header alone: the direct queues bind with `x-match=any`, so any other header would reach
    more workers, and an original SDK worker stops whatever job it runs, whatever the job id.
    When no instance is known yet (no answer came), it goes to stepflow's own workers only
    (`stepflow_broadcast`), which stop the job if they hold it, or else answer its order
    `stopped` without running it if it reaches them later; an original worker that
    took the job and has not reported yet cannot be reached, and its answer will come late."""
    body = p.DirectOrder(type="stop_process", job_id=stop.job_id if stop.wire_id is None else stop.wire_id,
                         parameters=[])
    target = {"instance_id": stop.instance_id} if stop.instance_id else {"stepflow_broadcast": "true"}
    return p.Message(
        routing_key="",
        body=p.encoder.encode(body),
        message_id=f"stop:{stop.job_id}",
        headers={**target, "workflow_id": str(stop.workflow_id)},
    )
