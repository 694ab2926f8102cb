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
import inspect
import os
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, get_type_hints

import msgspec
import structlog

from stepflow.adapters import protocol as p
from stepflow.engine.ports import Delivery, WorkerBroker

log = structlog.get_logger("stepflow.worker")
SDK_VERSION = "0.1.0"
REMEMBERED_JOBS = 10_000
INVALID_ORDER = "invalid_order"  # the error kind of an order the worker cannot read
MAX_ERROR_TEXT = 500  # characters of an exception's text kept in an invalid_order answer
MAX_JOB_ID_BYTES = 200  # ids longer than this could not name a response (AMQP short strings)
MAX_ATTEMPT = 1_000_000_000

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
        # Unique per attempt and per run of the worker: a job redelivered to a restarted
        # worker reports progress under new ids, not ones the backend already applied.
        self._progress_prefix = f"{order.job_id}:progression:{order.attempt}:{worker.run_token}"
        self.log = log.bind(job_id=order.job_id, workflow_id=workflow_id, job_type=job_type)

    async def progress(self, percent: int, message: str | None = None) -> None:
        """Report progress (0-100). Confirmed by the broker before it returns."""
        self._sent += 1
        body = p.JobProgression(
            job_id=self.job_id, progression=int(percent), datetime=datetime.now(UTC),
            docker_container_id=self._worker.instance_id, message=message, workflow_id=self.workflow_id,
        )
        await self._broker.publish_response(p.Message(
            routing_key=p.JOB_PROGRESSION, body=p.encoder.encode(body),
            message_id=f"{self._progress_prefix}:{self._sent}",
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


class _Job:
    """A job running here: its task, and the deliveries of its order to settle with its answer
    (more than one when the order was redelivered while it ran, e.g. after a reconnection)."""

    __slots__ = ("cancellable", "deliveries", "task")

    def __init__(self, delivery: Delivery) -> None:
        self.task: asyncio.Task[None] | None = None
        self.deliveries: list[Delivery] | None = [delivery]  # None once settled
        self.cancellable = True  # False once the handler is over: a stop order comes too late


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
        self._jobs: dict[str, _Job] = {}  # job id -> the job running here
        self._chores: set[asyncio.Task[None]] = set()  # answers to bad or repeated orders
        self._answered: OrderedDict[str, p.Message] = OrderedDict()
        self._stopping = asyncio.Event()
        self.started_at = datetime.now(UTC)
        self.run_token = uuid.uuid4().hex[:8]  # new at each `run`: part of progress message ids
        self.completed = 0
        self.invalid_orders = 0  # orders that could not be read (answered or quarantined)

    @property
    def _running(self) -> dict[str, asyncio.Task[None]]:
        """The tasks of the jobs running here, by job id."""
        return {job_id: job.task for job_id, job in self._jobs.items() if job.task is not None}

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
        job = self._jobs.get(order.job_id)
        if job is not None and job.deliveries is not None:
            # Redelivered while it runs here (our channel was lost and came back): one run,
            # and its answer settles this delivery too.
            log.info("order_redelivered_while_running", job_id=order.job_id)
            job.deliveries.append(delivery)
            return
        answered = self._answered.get(order.job_id)
        if answered is not None:
            log.info("order_already_answered", job_id=order.job_id)
            self._chore(self._answer(broker, [delivery], answered, order.job_id))
            return
        job = _Job(delivery)
        self._jobs[order.job_id] = job
        job.task = asyncio.create_task(self._serve(broker, job, order, job_type, workflow_id))
        job.task.add_done_callback(functools.partial(self._finished, order.job_id, job))

    def _finished(self, job_id: str, job: _Job, task: asyncio.Task[None]) -> None:
        if self._jobs.get(job_id) is job:
            del self._jobs[job_id]
        if not task.cancelled() and task.exception() is not None:  # `_serve` settles; never expected
            log.error("job_task_failed", job_id=job_id, error=repr(task.exception()))

    def _chore(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def _serve(self, broker: WorkerBroker, job: _Job, order: p.JobOrder, job_type: str,
                     workflow_id: str) -> None:
        ctx = JobContext(self, broker, order, job_type, workflow_id)
        started = time.monotonic()
        try:
            response = await self._run_handler(broker, job, ctx, order, started)
        except asyncio.CancelledError:
            raise  # shutting down: the order went back to the queue
        except Exception as error:  # noqa: BLE001  building the answer failed: still answer, never hold the order
            ctx.log.error("job_answer_failed", error=_describe(error, MAX_ERROR_TEXT))
            response = self._result(ctx, "error", started, message=_describe(error, MAX_HANDLER_ERROR_TEXT),
                                    kind="worker_error")
        job.cancellable = False
        await self._answer(broker, job, response, order.job_id)
        self.completed += 1

    async def _run_handler(self, broker: WorkerBroker, job: _Job, ctx: JobContext, order: p.JobOrder,
                           started: float) -> p.Message:
        registered = self.handlers.get(ctx.job_type)
        try:
            if registered is None:
                raise JobFailed(f"worker {self.label!r} has no handler for {ctx.job_type!r}", kind="no_handler")
            params = self._params(registered, order)
            result = await registered.fn(params, ctx)
            return self._result(ctx, "completed", started, outputs=_outputs(result))
        except asyncio.CancelledError:
            if self._stopping.is_set():
                # Shutting down, not a stop order: leave the job to another worker.
                for delivery in _settle_list(job):
                    with contextlib.suppress(Exception):
                        await broker.reject(delivery, requeue=True)
                raise
            return self._result(ctx, "stopped", started, message="stopped by order")
        except JobFailed as error:
            return self._result(ctx, "error", started, message=_describe(error, MAX_HANDLER_ERROR_TEXT, bare=True),
                                kind=error.kind if isinstance(error.kind, str) else None)
        except Exception as error:  # noqa: BLE001  the handler's failure is the job's, not the worker's
            ctx.log.warning("job_failed", error=_describe(error, MAX_ERROR_TEXT))
            return self._result(ctx, "error", started, message=_describe(error, MAX_HANDLER_ERROR_TEXT),
                                kind=type(error).__name__)

    async def _answer(self, broker: WorkerBroker, held: _Job | list[Delivery], response: p.Message,
                      job_id: str) -> None:
        """Publish `response` (confirmed), remember it, then settle the order's deliveries.
        Never raises: if publishing fails for good, the order is rejected to the quarantine."""
        try:
            await broker.publish_response(response)
        except Exception as error:  # noqa: BLE001
            log.error("response_not_published", job_id=job_id, error=_describe(error, MAX_ERROR_TEXT))
            deliveries = _settle_list(held)
            for delivery in deliveries:
                with contextlib.suppress(Exception):
                    await broker.reject(delivery, requeue=False)
            return
        self._remember(job_id, response)
        for delivery in _settle_list(held):  # taken with no await since `_remember`: none is missed
            try:
                await broker.ack(delivery)
            except Exception as error:  # noqa: BLE001
                log.warning("order_ack_failed", job_id=job_id, error=_describe(error, MAX_ERROR_TEXT))

    async def _invalid(self, broker: WorkerBroker, delivery: Delivery, error: BaseException) -> None:
        """An order that cannot be read: answered `job_error` (kind invalid_order) when its job
        and workflow ids can be told from its message id and headers, else rejected without
        requeue (job queues dead-letter to the quarantine). Never raises, never leaves it held."""
        self.invalid_orders += 1
        try:
            reason = _describe(error, MAX_ERROR_TEXT)
            ids = _recover_ids(delivery)
            log.error("order_invalid", message_id=_loggable(getattr(delivery, "message_id", None)),
                      queue=_loggable(getattr(delivery, "queue", None)), reason=reason, answered=ids is not None)
            if ids is not None:
                await self._answer(broker, [delivery], self._invalid_answer(*ids, reason), ids[0])
                return
        except Exception as failure:  # noqa: BLE001  cannot be answered after all: quarantined below
            log.error("order_invalid_unanswered", error=_describe(failure, MAX_ERROR_TEXT))
        try:
            await broker.reject(delivery, requeue=False)
        except Exception as failure:  # noqa: BLE001
            log.error("order_reject_failed", error=_describe(failure, MAX_ERROR_TEXT))

    def _invalid_answer(self, job_id: str, workflow_id: str, job_type: str, reason: str) -> p.Message:
        body = p.JobResult(
            job_id=job_id, status="error", workflow_id=workflow_id, error_kind=INVALID_ORDER,
            instance_id=self.instance_id, execution_duration=0.0,
            parameters=[p.Parameter(id="message", type="string", value=reason)],
        )
        return p.Message(routing_key=p.JOB_ERROR, body=p.encoder.encode(body), message_id=f"{job_id}:error",
                         headers={"workflow_id": workflow_id, "job_type": job_type})

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
                await broker.ack(delivery)
                await self._direct(broker, delivery)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001  a bad direct order is dropped, never the worker
                log.error("direct_order_failed", message_id=_loggable(getattr(delivery, "message_id", None)),
                          reason=_describe(error, MAX_ERROR_TEXT))

    async def _direct(self, broker: WorkerBroker, delivery: Delivery) -> None:
        body = delivery.body
        if not isinstance(body, bytes) or len(body) > p.MAX_BODY_BYTES:
            raise ValueError("body is not bytes or over the size limit")
        order = p.decode_direct(body)
        if order.type == "stop_process" and order.job_id:
            job = self._jobs.get(order.job_id)
            if job is not None and job.task is not None and job.cancellable:
                log.info("job_stop_ordered", job_id=order.job_id)
                job.task.cancel()
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


# --- reading orders ----------------------------------------------------------------------

MAX_HANDLER_ERROR_TEXT = 4_000  # characters of a handler's error message sent to the backend


def read_order(delivery: Delivery) -> tuple[p.JobOrder, str, str]:
    """(order, job type, workflow id) of a job order, or raise whatever makes it unusable:
    a body over the size limit or not bytes, nested too deep, not a JobOrder, a header of the
    wrong type, an id that is empty, too long or not encodable."""
    body = delivery.body
    if not isinstance(body, bytes):
        raise TypeError(f"body is {type(body).__name__}, not bytes")
    if len(body) > p.MAX_BODY_BYTES:
        raise ValueError(f"body of {len(body)} bytes is over the {p.MAX_BODY_BYTES} byte limit")
    order = p.decode_order(body)
    headers = delivery.headers if delivery.headers is not None else {}
    if not isinstance(headers, Mapping):
        raise TypeError(f"headers are {type(headers).__name__}, not a table")
    _check_id(order.job_id, "job_id")
    if not 0 <= order.attempt <= MAX_ATTEMPT:
        raise ValueError(f"attempt {order.attempt} is out of range")
    job_type = _header(headers, "job_type") or getattr(delivery, "routing_key", None) or delivery.queue
    _check_id(job_type, "job type")
    workflow_id = _header(headers, "workflow_id") or order.workflow_id or ""
    if workflow_id:
        _check_id(workflow_id, "workflow_id")
    return order, job_type, workflow_id


def _header(headers: Mapping[str, Any], name: str) -> str | None:
    value = headers.get(name)
    if value is None or value == "" or value == b"":
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8")  # strict: UnicodeDecodeError is an invalid order
    if not isinstance(value, str):
        raise TypeError(f"header {name} is {type(value).__name__}, not a string")
    return value


def _check_id(value: Any, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} is empty")
    size = len(value.encode("utf-8"))  # strict: a lone surrogate raises UnicodeEncodeError
    if size > MAX_JOB_ID_BYTES:
        raise ValueError(f"{what} of {size} bytes is over {MAX_JOB_ID_BYTES}")


def _recover_ids(delivery: Delivery) -> tuple[str, str, str] | None:
    """(job id, workflow id, job type) of an unreadable order from its message id and headers
    only (an order's message id is its job id), or None when they cannot be trusted."""
    try:
        job_id = delivery.message_id
        _check_id(job_id, "message id")
        headers = delivery.headers
        if not isinstance(headers, Mapping):
            return None
        workflow_id = str(uuid.UUID(_header(headers, "workflow_id") or ""))
        try:
            job_type = _header(headers, "job_type") or delivery.queue
            _check_id(job_type, "job type")
        except Exception:  # noqa: BLE001
            job_type = str(delivery.queue)
        return job_id, workflow_id, job_type  # type: ignore[return-value]
    except Exception:  # noqa: BLE001
        return None


def _describe(error: BaseException, limit: int, *, bare: bool = False) -> str:
    """`Type: text` (or the text alone), valid UTF-8, at most `limit` characters."""
    try:
        text = str(error)
    except Exception:  # noqa: BLE001
        text = "<unprintable>"
    return _text(text if bare else f"{type(error).__name__}: {text}", limit)


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _loggable(value: Any) -> str | None:
    return None if value is None else _text(value, 200)


def _settle_list(held: _Job | list[Delivery]) -> list[Delivery]:
    """The deliveries to settle now; a job's list is closed, so none is added after."""
    if isinstance(held, list):
        return held
    deliveries, held.deliveries = held.deliveries or [], None
    return deliveries
