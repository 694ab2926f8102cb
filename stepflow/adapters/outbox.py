"""The outbox: job orders are published from stored events, never straight from a command.

It follows the notification log from a tracked position (`Tracking("outbox", id)` in the
store's tracking table): read the next stored `JobSubmitted` (and stop) events, publish them
with publisher confirms, then advance the position. A crash between store and publish, or
between publish and advancing, republishes on restart: at least once, never lost. Duplicates
are harmless because an order's message id is its job id, which workers remember.
"""

from __future__ import annotations

from eventsourcing.persistence import IntegrityError, Tracking, TrackingRecorder

from stepflow.adapters import protocol as p
from stepflow.engine import events as ev
from stepflow.engine.application import WorkflowEngine

OUTBOX = "outbox"
TOPICS = ("JobSubmitted", "WorkflowStopped", "WorkflowDeleted")


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
    if event.mode != "job":
        headers["mode"] = event.mode  # "notification": the backend's notifier runs it, not the broker
    return p.Message(
        routing_key=event.job_type,
        body=p.encoder.encode(order),
        message_id=event.job_id,
        headers=headers,
        priority=event.priority,
        delay_s=event.delay_s,
    )


def stop_messages(event: ev.WorkflowStopped | ev.WorkflowDeleted) -> list[p.Message]:
    """`stop_process` for each job that was running, broadcast: the backend does not track
    which instance holds a job, and a worker not holding it ignores the order."""
    return [
        p.Message(
            routing_key="",
            body=p.encoder.encode(p.DirectOrder(type="stop_process", job_id=job_id)),
            message_id=f"stop:{job_id}",
            headers={"broadcast": True, "workflow_id": str(event.originator_id)},
        )
        for job_id in event.jobs
    ]


class OutboxReader:
    """The synchronous half (runs in the store thread): read the next events, track progress."""

    def __init__(self, engine: WorkflowEngine, batch_size: int = 500) -> None:
        self.engine = engine
        self.batch_size = batch_size
        self.tracking: TrackingRecorder = engine.factory.tracking_recorder()
        self.position = self.tracking.max_tracking_id(OUTBOX) or 0

    def next_batch(self) -> tuple[int, list[p.Message], list[p.Message]]:
        """(last notification id, orders, direct messages); last id == position if none."""
        items = self.engine.notifications(self.position, self.batch_size, topics=TOPICS)
        orders: list[p.Message] = []
        directs: list[p.Message] = []
        for _, event in items:
            if isinstance(event, ev.JobSubmitted):
                orders.append(order_message(event))
            elif isinstance(event, (ev.WorkflowStopped, ev.WorkflowDeleted)):
                directs.extend(stop_messages(event))
        last = items[-1][0] if items else self.position
        return last, orders, directs

    def advance(self, position: int) -> None:
        if position <= self.position:
            return
        try:
            self.tracking.insert_tracking(Tracking(OUTBOX, position))
        except IntegrityError:
            pass  # another backend's outbox got further: keep going from ours
        self.position = position
