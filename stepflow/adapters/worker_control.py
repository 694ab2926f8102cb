"""Operators' controls of a worker: the direct orders of the protocol, under plain names.

    pause   -> stop_consuming_jobs     the worker hands back what it prefetched, takes no order
    resume  -> resume_consuming_jobs   it takes orders again
    stop    -> stop_worker             it stops taking orders, finishes its jobs, exits
    status  -> status                  it answers `worker_status` (Idle or Busy, pid, host)

Shared by `stepflow worker-control` (over RabbitMQ, from a shell) and the HTTP API (through
the backend's broker, whichever it is), so both send the same message and record the same
`WorkerOrdered` event. A direct order goes to one instance: header `instance_id` on the
`direct_messaging` headers exchange, which routes it to that worker's own queue only.
"""

from __future__ import annotations

import uuid
from typing import Literal

from stepflow.adapters import protocol as p

Action = Literal["status", "pause", "resume", "stop"]
ORDERS: dict[str, str] = {
    "status": "status",
    "pause": "stop_consuming_jobs",
    "resume": "resume_consuming_jobs",
    "stop": "stop_worker",
}
ACTIONS: tuple[str, ...] = tuple(ORDERS)


def direct_order(instance_id: str, action: str) -> p.Message:
    """The message that tells `instance_id` to do `action` (a key of `ORDERS`)."""
    order = ORDERS[action]
    return p.Message(
        routing_key="",
        body=p.encoder.encode(p.DirectOrder(type=order)),  # type: ignore[arg-type]
        message_id=f"{order}:{instance_id}:{uuid.uuid4().hex[:12]}",
        headers={"instance_id": instance_id},
    )
