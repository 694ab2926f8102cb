"""Inbound messages to engine commands: the one place that trusts nothing from the broker.

`translate` decodes a delivery by the queue it came from and returns the engine command it
asks for (or a worker announcement). Anything it cannot use raises `Malformed` with a reason
a person can act on; the backend then quarantines the message. Nothing here executes or
evaluates a payload: bodies are only decoded into typed Structs.
"""

from __future__ import annotations

import hashlib
from typing import Any
from uuid import UUID

import msgspec

from stepflow.adapters import protocol as p
from stepflow.engine import commands as cmd
from stepflow.engine.ports import Delivery


class Malformed(ValueError):
    """A message the backend cannot turn into a command; it goes to quarantine."""


def message_key(delivery: Delivery) -> str:
    """The message id, or a hash of the body when a producer sent none, so dedup still works."""
    if delivery.message_id:
        return delivery.message_id
    digest = hashlib.sha256(delivery.queue.encode() + b"\0" + delivery.body).hexdigest()[:32]
    return f"sha256:{digest}"


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:32]


# Not part of what an answer says: a job re-run after a crash (at least once) answers under the
# same message id with other timings and another worker, and is still the same answer.
_CIRCUMSTANCES = frozenset({"cause", "digest", "actor", "worker", "execution_duration"})
_sorted = msgspec.json.Encoder(order="sorted")


def content_digest(command: cmd.Command) -> str:
    """What tells a redelivery or a re-run (same answer) from another message reusing an
    applied id (another answer): the command's content, without its circumstances."""
    content = {k: v for k, v in msgspec.structs.asdict(command).items() if k not in _CIRCUMSTANCES}
    return hashlib.sha256(type(command).__name__.encode() + _sorted.encode(content)).hexdigest()[:32]


def translate(delivery: Delivery, max_body: int = p.MAX_BODY_BYTES) -> cmd.Command | p.WorkerDiscovery | p.WorkerStatus:
    """Raise `Malformed` for what cannot be used. The decoders bound the nesting depth before
    they decode, and anything else a body makes them raise (a RecursionError, a UnicodeError,
    a MemoryError) is the message's fault as well: it is reported as malformed."""
    try:
        command = _translate(delivery, max_body)
    except Malformed:
        raise
    except Exception as error:  # noqa: BLE001 - the body is to blame, whatever it raised
        raise Malformed(f"invalid {delivery.queue} message: {type(error).__name__}: {str(error)[:300]}") from None
    if isinstance(command, cmd.Command):
        return msgspec.structs.replace(command, digest=content_digest(command))
    return command


def _translate(delivery: Delivery, max_body: int) -> cmd.Command | p.WorkerDiscovery | p.WorkerStatus:
    if len(delivery.body) > max_body:
        raise Malformed(f"body of {len(delivery.body)} bytes is over the {max_body} byte limit")
    content_type = delivery.content_type
    if content_type and content_type.split(";")[0].strip() != p.CONTENT_TYPE:
        raise Malformed(f"content type {content_type!r} is not {p.CONTENT_TYPE}")
    queue = delivery.queue
    try:
        if queue == p.JOB_PROGRESSION:
            return _progression(delivery, p.decode_progression(delivery.body))
        if queue in (p.JOB_COMPLETED, p.JOB_ERROR, p.JOB_STOPPED):
            return _result(delivery, _decode_result(delivery))
        if queue == p.JOB_QUEUE_NOT_FOUND:
            return _unroutable(delivery, p.decode_order(delivery.body))
        if queue in (p.WORKER_DISCOVERY, p.WORKER_CREATED):
            return p.decode_discovery(delivery.body)
        if queue == p.WORKER_TERMINATED:
            return msgspec.structs.replace(p.decode_discovery(delivery.body), activity="Terminated")
        if queue == p.WORKER_STATUS:
            return p.decode_status(delivery.body)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise Malformed(f"invalid {queue} message: {error}") from None
    raise Malformed(f"no handler for queue {queue!r}")


def _workflow_id(delivery: Delivery, in_body: str | None, required: bool = True) -> UUID:
    raw: Any = delivery.headers.get("workflow_id") or in_body
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not raw:
        if not required:
            return cmd.NO_WORKFLOW
        raise Malformed("no workflow_id header or field")
    try:
        return UUID(str(raw))
    except ValueError:
        raise Malformed(f"workflow_id {str(raw)[:80]!r} is not a UUID") from None


def _job(delivery: Delivery, job_id: p.WireJobId, workflow_in_body: str | None) -> dict[str, Any]:
    """The fields naming the job. An integer is a wire id: the engine finds the job (and the
    workflow, when the message does not name it, as the original SDK's never does)."""
    if isinstance(job_id, int):
        if not 0 <= job_id <= p.MAX_WIRE_INT:
            raise Malformed(f"job_id {job_id} is not an unsigned 64-bit integer")
        return {"workflow_id": _workflow_id(delivery, workflow_in_body, required=False), "job_id": "",
                "wire_id": job_id}
    return {"workflow_id": _workflow_id(delivery, workflow_in_body), "job_id": job_id}


def _progression(delivery: Delivery, message: p.JobProgression) -> cmd.Command:
    return cmd.RecordProgress(
        **_job(delivery, message.job_id, message.workflow_id), cause=message_key(delivery),
        progression=message.progression, message=message.message, worker=message.docker_container_id,
    )


# What an answer is, by the key it came on and the status it says (the original SDK answers a
# stop on job_stopped with status "completed", and a job that set itself stopped on
# job_completed with status "stopped").
_ENDINGS = {
    (p.JOB_COMPLETED, "completed"): "completed", (p.JOB_COMPLETED, "stopped"): "stopped",
    (p.JOB_ERROR, "error"): "error",
}


class _Unanswerable(msgspec.Struct, frozen=True, kw_only=True):
    """What the original SDK sends when it cannot read an order or a direct message."""

    message: str
    status: str = "error"


def _decode_result(delivery: Delivery) -> p.JobResult:
    try:
        return p.decode_result(delivery.body)
    except msgspec.ValidationError as error:
        try:
            unreadable = msgspec.json.decode(delivery.body, type=_Unanswerable)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise error from None
        raise Malformed(f"a {delivery.queue} without job_id (a worker could not read an order or a direct "
                        f"message): {unreadable.message[:300]}") from None


def _result(delivery: Delivery, result: p.JobResult) -> cmd.Command:
    ending = "stopped" if delivery.queue == p.JOB_STOPPED else _ENDINGS.get((delivery.queue, result.status))
    if ending is None:
        raise Malformed(f"status {result.status[:40]!r} on the {delivery.queue} queue")
    base: dict[str, Any] = {**_job(delivery, result.job_id, result.workflow_id), "cause": message_key(delivery)}
    if ending == "completed":
        return cmd.RecordCompleted(
            **base, outputs=p.from_parameters(result.parameters),
            destination_paths=tuple(result.destination_paths),
            execution_duration=result.execution_duration, worker=result.instance_id,
        )
    if ending == "error":
        message = result.parameter("message")
        return cmd.RecordError(
            **base, message=str(message) if message is not None else "error without message",
            kind=result.error_kind, execution_duration=result.execution_duration, worker=result.instance_id,
        )
    return cmd.RecordStopped(**base, reason=str(result.parameter("message") or "stopped by worker"))


def _unroutable(delivery: Delivery, order: p.JobOrder) -> cmd.Command:
    job_type = delivery.headers.get("job_type")
    if isinstance(job_type, bytes):
        job_type = job_type.decode("utf-8", "replace")
    return cmd.RecordUnroutable(
        **_job(delivery, order.job_id, order.workflow_id),
        cause=f"unroutable:{message_key(delivery)}",
        job_type=str(job_type or getattr(delivery, "routing_key", "") or "unknown"),
    )
