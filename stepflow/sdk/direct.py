"""The worker's own channel: orders sent to this instance, and what it tells about itself.

Job orders come on shared job-type queues; these come on the worker's direct queue and are
about the worker, not a job: stop a running job (`stop_process`), stop or resume taking
orders, stop, report status. A bad one is logged and dropped, never fatal. Announcements on
`worker_discovery` (at start, as heartbeats, at the end) are how backends know the worker.

`DirectOrders` is a part of `Worker`, kept apart because it reads as its own story: it uses
the worker's jobs and stop event, and nothing of how jobs are run.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from datetime import datetime

import structlog

from stepflow.adapters import protocol as p
from stepflow.engine.ports import Delivery, WorkerBroker
from stepflow.sdk import answers
from stepflow.sdk.handlers import Registered
from stepflow.sdk.jobs import RunningJob
from stepflow.sdk.orders import MAX_ERROR_TEXT, describe, loggable

log = structlog.get_logger("stepflow.worker")
STOPS_REMEMBERED = 10_000  # job ids whose stop came before their order, newest kept


class DirectOrders:
    instance_id: str
    label: str
    description: str
    version: str
    started_at: datetime
    heartbeat_s: float
    handlers: dict[str, Registered]
    _jobs: dict[str, RunningJob]  # job id -> the job running here
    _stopped_ahead: OrderedDict[str, None]  # stops that came before their order (see `_direct`)
    _stopping: asyncio.Event

    @property
    def _running(self) -> dict[str, asyncio.Task[None]]:
        """The tasks of the jobs running here, by job id."""
        return {job_id: job.task for job_id, job in self._jobs.items() if job.task is not None}

    async def _direct_loop(self, broker: WorkerBroker) -> None:
        while True:
            delivery = await broker.next_direct()
            try:
                await broker.ack(delivery)
                await self._direct(broker, delivery)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001  a bad direct order is dropped, never the worker
                log.error("direct_order_failed", message_id=loggable(getattr(delivery, "message_id", None)),
                          reason=describe(error, MAX_ERROR_TEXT))

    async def _direct(self, broker: WorkerBroker, delivery: Delivery) -> None:
        body = delivery.body
        if not isinstance(body, bytes) or len(body) > p.MAX_BODY_BYTES:
            raise ValueError("body is not bytes or over the size limit")
        order = p.decode_direct(body)
        if order.type == "stop_process" and order.job_id:
            key = p.job_key(order.job_id)
            job = self._jobs.get(key)
            if job is None:
                # Not here (yet): a stop with no instance named goes to every worker while the
                # order may still wait in a queue, behind jobs this worker holds. Remember it:
                # the order, if it comes, is answered `stopped` and not run (run, it would hold
                # a prefetch slot for a job the backend has given up on, until the next stop).
                self._stopped_ahead[key] = None
                while len(self._stopped_ahead) > STOPS_REMEMBERED:
                    self._stopped_ahead.popitem(last=False)
            elif job.task is not None and job.cancellable:
                log.info("job_stop_ordered", job_id=order.job_id)
                job.task.cancel()
        elif order.type == "stop_consuming_jobs":
            await broker.pause_orders()
        elif order.type == "resume_consuming_jobs":
            await broker.resume_orders()
        elif order.type == "stop_worker":
            self._stopping.set()
        elif order.type == "status":
            await broker.publish_response(answers.status(self.instance_id, busy=bool(self._running)))

    async def _heartbeat_loop(self, broker: WorkerBroker) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            await self._announce(broker, "Busy" if self._running else "Idle")

    async def _announce(self, broker: WorkerBroker, activity: str) -> None:
        await broker.publish_response(answers.discovery(
            instance_id=self.instance_id, label=self.label, description=self.description,
            version=self.version, started_at=self.started_at, handlers=self.handlers, activity=activity,
        ))

