"""The worker SDK: write a typed `async def`, get a Step Flow worker.

    worker = Worker("media-worker")

    @worker.job("transcode")
    async def transcode(params: TranscodeParams, ctx: JobContext) -> dict:
        await ctx.progress(40, "encoding")
        return {"path": "/out/720p.mp4"}

The worker owns the broker, prefetch, heartbeats and shutdown; the author writes none of it.
Parameters are validated at the edge into the handler's annotated msgspec Struct (a bad order
is an error of kind `invalid_parameters`, not retried). A handler fails by raising; raise
`JobFailed(message, kind=...)` to name the kind a retry policy can exclude. A `stop_process`
order cancels the handler: it sees `asyncio.CancelledError`, so cleanup is a `finally`.

Guarantees: an order is acked only after its response was confirmed by the broker; a job id
already answered is answered again with the same response (same message id), never re-run,
so a redelivered or republished order changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import os
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any, get_type_hints

import msgspec
import structlog

from stepflow.adapters import protocol as p
from stepflow.engine.ports import Delivery, WorkerBroker

log = structlog.get_logger("stepflow.worker")
SDK_VERSION = "0.1.0"
REMEMBERED_JOBS = 10_000

Handler = Callable[[Any, "JobContext"], Awaitable[Any]]


class JobFailed(Exception):
    """Raise from a handler to fail the job with a kind (e.g. 'invalid_input')."""

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind


class JobContext:
    def __init__(self, worker: Worker, broker: WorkerBroker, order: p.JobOrder, job_type: str, workflow_id: str) -> None:
        self.job_id = order.job_id
        self.attempt = order.attempt
        self.job_type = job_type
        self.workflow_id = workflow_id
        self._worker = worker
        self._broker = broker
        self._sent = 0
        self.log = log.bind(job_id=order.job_id, workflow_id=workflow_id, job_type=job_type)

    async def progress(self, percent: int, message: str | None = None) -> None:
        """Report progress (0-100). Confirmed by the broker before it returns."""
        self._sent += 1
        body = p.JobProgression(
            job_id=self.job_id, progression=int(percent), datetime=datetime.now(timezone.utc),
            docker_container_id=self._worker.instance_id, message=message, workflow_id=self.workflow_id,
        )
        await self._broker.publish_response(p.Message(
            routing_key=p.JOB_PROGRESSION, body=p.encoder.encode(body),
            message_id=f"{self.job_id}:progression:{self._sent}",
            headers={"workflow_id": self.workflow_id, "job_type": self.job_type},
        ))


class _Registered:
    def __init__(self, fn: Handler) -> None:
        self.fn = fn
        hints = get_type_hints(fn)
        first = next(iter(inspect.signature(fn).parameters), None)
        self.params_type: Any = hints.get(first) if first else None
        if self.params_type in (dict, None, Any, inspect.Parameter.empty):
            self.params_type = None


class Worker:
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
    ) -> None:
        self.label = label
        self.version = version
        self.description = description
        self.prefetch = prefetch
        self.heartbeat_s = heartbeat_s
        self.shutdown_grace_s = shutdown_grace_s
        self.instance_id = instance_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.handlers: dict[str, _Registered] = {}
        self._running: dict[str, asyncio.Task[Any]] = {}
        self._answered: OrderedDict[str, p.Message] = OrderedDict()
        self._stopping = asyncio.Event()
        self.started_at = datetime.now(timezone.utc)
        self.completed = 0

    def job(self, job_type: str | None = None) -> Callable[[Handler], Handler]:
        """Register a handler for a job type (default: the function's name)."""

        def register(fn: Handler) -> Handler:
            self.handlers[job_type or fn.__name__] = _Registered(fn)
            return fn

        return register

    # --- running -----------------------------------------------------------------------

    async def run(self, broker: WorkerBroker, *, stop: asyncio.Event | None = None) -> None:
        """Serve until `stop` is set, a `stop_worker` order arrives, or cancellation."""
        if not self.handlers:
            raise RuntimeError(f"worker {self.label!r} has no job handler")
        self._stopping = stop or asyncio.Event()
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
            if self._running:
                # Let running jobs finish within the grace period; cancel the rest, which
                # puts their orders back on the queue for another worker (see `_serve`).
                _, late = await asyncio.wait(list(self._running.values()), timeout=self.shutdown_grace_s)
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._announce(broker, "Terminated")
            await broker.close()
            log.info("worker_stopped", instance_id=self.instance_id)

    async def _order_loop(self, broker: WorkerBroker) -> None:
        while True:
            delivery = await broker.next_order()
            task = asyncio.create_task(self._serve(broker, delivery))
            key = delivery.message_id or str(id(task))  # an order's message id is its job id
            self._running[key] = task
            task.add_done_callback(functools.partial(self._finished, key))

    def _finished(self, key: str, task: asyncio.Task[None]) -> None:
        self._running.pop(key, None)

    async def _serve(self, broker: WorkerBroker, delivery: Delivery) -> None:
        try:
            order = p.decode_order(delivery.body)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            log.error("order_malformed", message_id=delivery.message_id, reason=str(error))
            await broker.reject(delivery, requeue=False)
            return
        headers = delivery.headers
        job_type = str(headers.get("job_type") or getattr(delivery, "routing_key", "") or delivery.queue)
        workflow_id = str(headers.get("workflow_id") or order.workflow_id or "")
        answered = self._answered.get(order.job_id)
        if answered is not None:
            log.info("order_already_answered", job_id=order.job_id)
            await broker.publish_response(answered)
            await broker.ack(delivery)
            return
        registered = self.handlers.get(job_type)
        ctx = JobContext(self, broker, order, job_type, workflow_id)
        started = time.monotonic()
        try:
            if registered is None:
                raise JobFailed(f"worker {self.label!r} has no handler for {job_type!r}", kind="no_handler")
            params = self._params(registered, order)
            result = await registered.fn(params, ctx)
            response = self._result(ctx, "completed", started, outputs=_outputs(result))
        except asyncio.CancelledError:
            if self._stopping.is_set():
                # Shutting down, not a stop order: leave the job to another worker.
                await broker.reject(delivery, requeue=True)
                raise
            response = self._result(ctx, "stopped", started, message="stopped by order")
        except JobFailed as error:
            response = self._result(ctx, "error", started, message=str(error), kind=error.kind)
        except Exception as error:  # the handler's failure is the job's, not the worker's
            ctx.log.warning("job_failed", error=repr(error))
            response = self._result(ctx, "error", started, message=f"{type(error).__name__}: {error}",
                                    kind=type(error).__name__)
        await broker.publish_response(response)
        self._remember(order.job_id, response)
        await broker.ack(delivery)
        self.completed += 1

    def _params(self, registered: _Registered, order: p.JobOrder) -> Any:
        values = p.from_parameters(order.parameters)
        if registered.params_type is None:
            return values
        try:
            return msgspec.convert(values, registered.params_type)
        except msgspec.ValidationError as error:
            raise JobFailed(f"invalid parameters: {error}", kind="invalid_parameters") from None

    def _result(self, ctx: JobContext, status: str, started: float, *, outputs: dict[str, Any] | None = None,
                message: str | None = None, kind: str | None = None) -> p.Message:
        parameters = p.to_parameters(outputs or {})
        if message is not None:
            parameters.append(p.Parameter(id="message", type="string", value=message))
        body = p.JobResult(
            job_id=ctx.job_id, status=status, parameters=parameters,  # type: ignore[arg-type]
            execution_duration=round(time.monotonic() - started, 6), workflow_id=ctx.workflow_id,
            error_kind=kind, instance_id=self.instance_id,
        )
        return p.Message(
            routing_key=f"job_{status}" if status != "error" else p.JOB_ERROR,
            body=p.encoder.encode(body),
            message_id=f"{ctx.job_id}:{status}",
            headers={"workflow_id": ctx.workflow_id, "job_type": ctx.job_type},
        )

    def _remember(self, job_id: str, response: p.Message) -> None:
        self._answered[job_id] = response
        while len(self._answered) > REMEMBERED_JOBS:
            self._answered.popitem(last=False)

    async def _direct_loop(self, broker: WorkerBroker) -> None:
        while True:
            delivery = await broker.next_direct()
            try:
                order = p.decode_direct(delivery.body)
            except (msgspec.DecodeError, msgspec.ValidationError) as error:
                log.error("direct_order_malformed", reason=str(error))
                await broker.ack(delivery)
                continue
            await broker.ack(delivery)
            if order.type == "stop_process" and order.job_id:
                for key, task in list(self._running.items()):
                    if key == order.job_id:
                        log.info("job_stop_ordered", job_id=order.job_id)
                        task.cancel()
            elif order.type == "stop_consuming_jobs":
                await broker.pause_orders()
            elif order.type == "resume_consuming_jobs":
                await broker.resume_orders()
            elif order.type == "stop_worker":
                self._stopping.set()
            elif order.type == "status":
                await self._status(broker)

    async def _status(self, broker: WorkerBroker) -> None:
        body = p.WorkerStatus(
            worker=p.WorkerActivity(activity="Busy" if self._running else "Idle",
                                    system_info={"pid": os.getpid(), "host": socket.gethostname()}),
            instance_id=self.instance_id,
        )
        await broker.publish_response(p.Message(
            routing_key=p.WORKER_STATUS, body=p.encoder.encode(body),
            message_id=f"{self.instance_id}:status:{uuid.uuid4().hex}",
        ))

    async def _heartbeat_loop(self, broker: WorkerBroker) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            await self._announce(broker, "Busy" if self._running else "Idle")

    async def _announce(self, broker: WorkerBroker, activity: str) -> None:
        body = p.WorkerDiscovery(
            instance_id=self.instance_id,
            queue_name=",".join(self.handlers),
            direct_messaging_queue_name=f"{p.DIRECT_MESSAGING}_{self.instance_id}",
            label=self.label, description=self.description, version=self.version, sdk_version=SDK_VERSION,
            parameters={t: _schema(r.params_type) for t, r in self.handlers.items()},
            job_types=list(self.handlers), host=socket.gethostname(), started_at=self.started_at,
            activity=activity,  # type: ignore[arg-type]
        )
        await broker.publish_response(p.Message(
            routing_key=p.WORKER_DISCOVERY, body=p.encoder.encode(body),
            message_id=f"{self.instance_id}:discovery:{uuid.uuid4().hex}",
        ))


def _outputs(result: Any) -> dict[str, Any]:
    if result is None:
        return {}
    if isinstance(result, msgspec.Struct):
        return msgspec.to_builtins(result)  # type: ignore[no-any-return]
    if isinstance(result, dict):
        return msgspec.to_builtins(result)  # type: ignore[no-any-return]
    raise TypeError(f"a job handler returns a dict or a msgspec Struct, not {type(result).__name__}")


def _schema(params_type: Any) -> dict[str, Any]:
    if params_type is None:
        return {}
    try:
        return msgspec.json.schema(params_type)
    except (TypeError, ValueError):
        return {}
