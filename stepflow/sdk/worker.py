"""`Worker`: registration of handlers, and the loop that takes orders and answers them.

Guarantees: an order is acked only after its response was confirmed by the broker; a job id
already answered is answered again with the same response (same message id), never re-run,
and an order redelivered while its job still runs here waits for that run's answer, so a
redelivered or republished order changes nothing. An order that cannot be read (not JSON,
nested too deep, too big, wrongly typed headers, anything the reading raises) never stops
the worker: it is answered `job_error` of kind `invalid_order` when its job and workflow ids
can be told from its message id and headers, else rejected to the quarantine queue (the
job queues dead-letter there), and logged either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import structlog

from stepflow.adapters import protocol as p
from stepflow.engine.ports import Delivery, WorkerBroker
from stepflow.sdk import answers
from stepflow.sdk.answered import AnsweredFile
from stepflow.sdk.answers import SDK_VERSION
from stepflow.sdk.context import JobContext, JobFailed
from stepflow.sdk.direct import DirectOrders
from stepflow.sdk.handlers import Handler, Registered, outputs
from stepflow.sdk.jobs import RunningJob, settle
from stepflow.sdk.orders import (
    MAX_ERROR_TEXT,
    MAX_HANDLER_ERROR_TEXT,
    describe,
    loggable,
    read_order,
    recover_ids,
)

log = structlog.get_logger("stepflow.worker")
REMEMBERED_JOBS = 10_000

__all__ = ["REMEMBERED_JOBS", "SDK_VERSION", "Handler", "Worker"]


class Worker(DirectOrders):
    """Handlers for job types, and everything around them: the author writes none of the
    broker, prefetch, heartbeat or shutdown code. Run it with `stepflow worker MODULE:ATTR`,
    or pass it to `EmbeddedRuntime` to run it in-process."""

    def __init__(
        self,
        label: str,
        *,
        version: str = "0.1.0",
        description: str = "",
        prefetch: int = 1,
        heartbeat_s: float = 10.0,
        instance_id: str | None = None,
        shutdown_grace_s: float = 30.0,
        answered_file: str | os.PathLike[str] | None = None,
    ) -> None:
        """`answered_file`: keep the answered jobs in this file too, so a restarted worker
        answers a redelivered order from it instead of running the job again
        (`stepflow.sdk.answered`)."""
        self.label = label
        self.version = version
        self.description = description
        self.prefetch = prefetch
        self.heartbeat_s = heartbeat_s
        self.shutdown_grace_s = shutdown_grace_s
        self.instance_id = instance_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.handlers: dict[str, Registered] = {}
        self._jobs: dict[str, RunningJob] = {}  # job id -> the job running here
        self._stopped_ahead: OrderedDict[str, None] = OrderedDict()
        self._chores: set[asyncio.Task[None]] = set()  # answers to bad or repeated orders
        self.answered_file = AnsweredFile(answered_file, REMEMBERED_JOBS) if answered_file is not None else None
        self._answered: OrderedDict[str, p.Message] = (
            self.answered_file.load() if self.answered_file is not None else OrderedDict())
        self._stopping = asyncio.Event()
        self.started_at = datetime.now(UTC)
        self.run_token = uuid.uuid4().hex[:8]  # new at each `run`: part of progress message ids
        self.completed = 0
        self.invalid_orders = 0  # orders that could not be read (answered or quarantined)

    def job(self, job_type: str | None = None) -> Callable[[Handler], Handler]:
        """Register a handler for a job type (default: the function's name)."""

        def register(fn: Handler) -> Handler:
            self.handlers[job_type or fn.__name__] = Registered(fn)
            return fn

        return register

    # --- running -----------------------------------------------------------------------

    async def run(self, broker: WorkerBroker, *, stop: asyncio.Event | None = None) -> None:
        """Serve until `stop` is set, a `stop_worker` order arrives, or cancellation."""
        if not self.handlers:
            raise RuntimeError(f"worker {self.label!r} has no job handler")
        self._stopping = stop or asyncio.Event()
        self.run_token = uuid.uuid4().hex[:8]
        await broker.connect()
        job_types = list(self.handlers)
        await broker.consume_orders(job_types, self.prefetch)
        await broker.consume_direct(self.instance_id, job_types)
        await self._announce(broker, "Idle")
        loops = [
            asyncio.create_task(self._order_loop(broker)),
            asyncio.create_task(self._direct_loop(broker)),
            asyncio.create_task(self._heartbeat_loop(broker)),
        ]
        log.info("worker_started", instance_id=self.instance_id, job_types=job_types)
        try:
            stopping = asyncio.create_task(self._stopping.wait())
            await asyncio.wait([stopping, *loops], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            for task in loops:
                if task.done() and task.exception():
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in loops:
                task.cancel()
            running = [*self._running.values(), *self._chores]
            if running:
                # Let running jobs finish within the grace period; cancel the rest, which
                # puts their orders back on the queue for another worker (see `_serve`).
                _, late = await asyncio.wait(running, timeout=self.shutdown_grace_s)
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._announce(broker, "Terminated")
            await broker.close()
            if self.answered_file is not None:
                self.answered_file.close()
            log.info("worker_stopped", instance_id=self.instance_id)

    async def _order_loop(self, broker: WorkerBroker) -> None:
        while True:
            self._take(broker, await broker.next_order())

    def _take(self, broker: WorkerBroker, delivery: Delivery) -> None:
        """Read an order and start its job; whatever the order is, it gets settled."""
        try:
            order, job_type, workflow_id = read_order(delivery)
        except Exception as error:  # noqa: BLE001  anything reading it raises: RecursionError, KeyError, ...
            self._chore(self._invalid(broker, delivery, error))
            return
        key = p.job_key(order.job_id)
        job = self._jobs.get(key)
        if job is not None and job.deliveries is not None:
            # Redelivered while it runs here (our channel was lost and came back): one run,
            # and its answer settles this delivery too.
            log.info("order_redelivered_while_running", job_id=key)
            job.deliveries.append(delivery)
            return
        answered = self._answered.get(key)
        if answered is not None:
            log.info("order_already_answered", job_id=key)
            self._chore(self._answer(broker, [delivery], answered, key))
            return
        stopped = key in self._stopped_ahead
        if stopped:
            del self._stopped_ahead[key]
            log.info("order_stopped_before_start", job_id=key)
        job = RunningJob(delivery)
        self._jobs[key] = job
        job.task = asyncio.create_task(self._serve(broker, job, order, job_type, workflow_id, stopped=stopped))
        job.task.add_done_callback(functools.partial(self._finished, key, job))

    def _finished(self, job_id: str, job: RunningJob, task: asyncio.Task[None]) -> None:
        if self._jobs.get(job_id) is job:
            del self._jobs[job_id]
        if not task.cancelled() and task.exception() is not None:  # `_serve` settles; never expected
            log.error("job_task_failed", job_id=job_id, error=repr(task.exception()))

    def _chore(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def _serve(self, broker: WorkerBroker, job: RunningJob, order: p.JobOrder, job_type: str,
                     workflow_id: str, *, stopped: bool = False) -> None:
        """Run the job and answer; a job whose stop came first (`stopped`) is answered
        `stopped` without running."""
        ctx = JobContext(self, broker, order, job_type, workflow_id)
        started = time.monotonic()
        try:
            if stopped:
                response = answers.result(ctx, self.instance_id, "stopped", started,
                                          message="stopped by order before it started")
            else:
                response = await self._run_handler(broker, job, ctx, order, started)
        except asyncio.CancelledError:
            raise  # shutting down: the order went back to the queue
        except Exception as error:  # noqa: BLE001  building the answer failed: still answer, never hold the order
            ctx.log.error("job_answer_failed", error=describe(error, MAX_ERROR_TEXT))
            response = answers.result(ctx, self.instance_id, "error", started,
                                      message=describe(error, MAX_HANDLER_ERROR_TEXT), kind="worker_error")
        job.cancellable = False
        await self._answer(broker, job, response, p.job_key(order.job_id))
        self.completed += 1

    async def _run_handler(self, broker: WorkerBroker, job: RunningJob, ctx: JobContext, order: p.JobOrder,
                           started: float) -> p.Message:
        registered = self.handlers.get(ctx.job_type)
        try:
            if registered is None:
                raise JobFailed(f"worker {self.label!r} has no handler for {ctx.job_type!r}", kind="no_handler")
            result = await registered.fn(registered.params(order), ctx)
            return answers.result(ctx, self.instance_id, "completed", started, outputs=outputs(result))
        except asyncio.CancelledError:
            if self._stopping.is_set():
                # Shutting down, not a stop order: leave the job to another worker.
                for delivery in settle(job):
                    with contextlib.suppress(Exception):
                        await broker.reject(delivery, requeue=True)
                raise
            return answers.result(ctx, self.instance_id, "stopped", started, message="stopped by order")
        except JobFailed as error:
            return answers.result(ctx, self.instance_id, "error", started,
                                  message=describe(error, MAX_HANDLER_ERROR_TEXT, bare=True),
                                  kind=error.kind if isinstance(error.kind, str) else None)
        except Exception as error:  # noqa: BLE001  the handler's failure is the job's, not the worker's
            ctx.log.warning("job_failed", error=describe(error, MAX_ERROR_TEXT))
            return answers.result(ctx, self.instance_id, "error", started,
                                  message=describe(error, MAX_HANDLER_ERROR_TEXT), kind=type(error).__name__)

    async def _answer(self, broker: WorkerBroker, held: RunningJob | list[Delivery], response: p.Message,
                      job_id: str) -> None:
        """Publish `response` (confirmed), remember it, then settle the order's deliveries.
        Never raises: if publishing fails for good, the order is rejected to the quarantine."""
        try:
            await broker.publish_response(response)
        except Exception as error:  # noqa: BLE001
            log.error("response_not_published", job_id=job_id, error=describe(error, MAX_ERROR_TEXT))
            deliveries = settle(held)
            for delivery in deliveries:
                with contextlib.suppress(Exception):
                    await broker.reject(delivery, requeue=False)
            return
        self._remember(job_id, response)
        for delivery in settle(held):  # taken with no await since `_remember`: none is missed
            try:
                await broker.ack(delivery)
            except Exception as error:  # noqa: BLE001
                log.warning("order_ack_failed", job_id=job_id, error=describe(error, MAX_ERROR_TEXT))

    async def _invalid(self, broker: WorkerBroker, delivery: Delivery, error: BaseException) -> None:
        """An order that cannot be read: answered `job_error` (kind invalid_order) when its job
        and workflow ids can be told from its message id and headers, else rejected without
        requeue (job queues dead-letter to the quarantine). Never raises, never leaves it held."""
        self.invalid_orders += 1
        try:
            reason = describe(error, MAX_ERROR_TEXT)
            ids = recover_ids(delivery)
            log.error("order_invalid", message_id=loggable(getattr(delivery, "message_id", None)),
                      queue=loggable(getattr(delivery, "queue", None)), reason=reason, answered=ids is not None)
            if ids is not None:
                await self._answer(broker, [delivery], answers.invalid_order(self.instance_id, *ids, reason), ids[0])
                return
        except Exception as failure:  # noqa: BLE001  cannot be answered after all: quarantined below
            log.error("order_invalid_unanswered", error=describe(failure, MAX_ERROR_TEXT))
        try:
            await broker.reject(delivery, requeue=False)
        except Exception as failure:  # noqa: BLE001
            log.error("order_reject_failed", error=describe(failure, MAX_ERROR_TEXT))

    def _remember(self, job_id: str, response: p.Message) -> None:
        self._answered[job_id] = response
        while len(self._answered) > REMEMBERED_JOBS:
            self._answered.popitem(last=False)
        if self.answered_file is not None:
            try:
                self.answered_file.append(job_id, response, self._answered)
            except OSError as error:  # a full disk must not stop the answers: memory still works
                log.error("answered_file_write_failed", path=str(self.answered_file.path), error=repr(error))
