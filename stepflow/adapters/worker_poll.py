"""Asking every worker how it is, now and then.

stepflow's own workers announce themselves again every few seconds (a heartbeat), but a worker
built on the original SDK announces itself only when it (re)connects and when it stops, and
the workers view calls a worker that has said nothing for `GONE_AFTER_S` gone. So the active
backend broadcasts a `status` order every `STATUS_EVERY_S`: every worker, of either SDK,
answers `worker_status` (activity, current job), which keeps the view true. The order goes
by `broadcast="true"` (a string: what the original SDK binds), and is not kept when no worker
listens (the direct exchange's alternate keeps nothing).
"""

from __future__ import annotations

import asyncio
import uuid

import structlog

from stepflow.adapters import protocol as p
from stepflow.engine.ports import BackendBroker

log = structlog.get_logger("stepflow.workers")

STATUS_EVERY_S = 30.0  # a third of GONE_AFTER_S: two polls may be lost before a worker looks gone


def status_request() -> p.Message:
    return p.Message(routing_key="", body=p.encoder.encode(p.DirectOrder(type="status")),
                     message_id=f"status:{uuid.uuid4().hex}", headers={"broadcast": "true"})


async def poll_workers(broker: BackendBroker, every_s: float = STATUS_EVERY_S) -> None:
    """Broadcast a status request every `every_s`, until cancelled; a failed publish (the
    broker is away) is logged and tried again at the next tick."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await broker.publish_direct(status_request())
        except Exception as error:  # noqa: BLE001 - a view's freshness never stops the backend
            log.warning("worker_status_poll_failed", error=repr(error)[:300])
