"""The `worker_orders` projection: the last direct order each worker was sent, from the log.

Worker announcements are not events (see `stepflow.projections.workers`), but the orders an
operator sends a worker are: `WorkerOrdered`, recorded by `stepflow worker-control`, the HTTP
API and the web view. The SDK reports only Idle or Busy, so this is how the workers view
knows a worker is paused: its last pause (`stop_consuming_jobs`) came after its last resume.
A projection, not a table written beside the order, so it survives a rebuild and agrees
across processes: a `worker-control` in a shell and a backend's HTTP API write the same log.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import msgspec

from stepflow.engine import events as ev
from stepflow.projections.store import Table, Tx, fetch_in

PAUSE, RESUME, STOP = "stop_consuming_jobs", "resume_consuming_jobs", "stop_worker"


class OrderRow(msgspec.Struct, gc=False):
    instance_id: str
    last_order: str
    ordered_at: float
    ordered_by: str | None
    paused_at: float | None  # set by a pause, cleared by a resume
    stop_ordered_at: float | None


ORDERS = Table(
    "sf_worker_orders",
    (("instance_id", "text"), ("last_order", "text"), ("ordered_at", "real"), ("ordered_by", "text"),
     ("paused_at", "real"), ("stop_ordered_at", "real")),
    key=("instance_id",),
)


class WorkerOrdersProjection:
    name: ClassVar[str] = "worker_orders"
    schema_version: ClassVar[int] = 1
    tables: ClassVar[tuple[Table, ...]] = (ORDERS,)

    def apply(self, tx: Tx, batch: Sequence[tuple[int, ev.Event]], position: int | None = None) -> None:
        orders = [e for _, e in batch if type(e) is ev.WorkerOrdered]
        if not orders:
            return
        rows = {r[0]: OrderRow(*r) for r in fetch_in(tx, ORDERS.select(), "instance_id",
                                                     {o.instance_id for o in orders})}
        for order in orders:
            at = order.timestamp.timestamp()
            row = rows.get(order.instance_id)
            if row is None:
                row = rows[order.instance_id] = OrderRow(
                    instance_id=order.instance_id, last_order=order.order, ordered_at=at, ordered_by=order.actor,
                    paused_at=None, stop_ordered_at=None)
            row.last_order, row.ordered_at, row.ordered_by = order.order, at, order.actor
            if order.order == PAUSE:
                row.paused_at = at
            elif order.order == RESUME:
                row.paused_at = None
            elif order.order == STOP:
                row.stop_ordered_at = at
        tx.executemany(ORDERS.upsert(), [msgspec.structs.astuple(r) for r in rows.values()])

    def committed(self, position: int) -> None:
        return None

    def forget(self) -> None:
        return None
