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
            return _result(delivery, p.decode_result(delivery.body))
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


def _workflow_id(delivery: Delivery, in_body: str | None) -> UUID:
    raw: Any = delivery.headers.get("workflow_id") or in_body
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not raw:
        raise Malformed("no workflow_id header or field")
    try:
        return UUID(str(raw))
    except ValueError:
        raise Malformed(f"workflow_id {str(raw)[:80]!r} is not a UUID") from None


def _progression(delivery: Delivery, message: p.JobProgression) -> cmd.Command:
    return cmd.RecordProgress(
        workflow_id=_workflow_id(delivery, message.workflow_id), cause=message_key(delivery),
        job_id=message.job_id, progression=message.progression, message=message.message,
        worker=message.docker_container_id,
    )


def _result(delivery: Delivery, result: p.JobResult) -> cmd.Command:
    expected = {p.JOB_COMPLETED: "completed", p.JOB_ERROR: "error", p.JOB_STOPPED: "stopped"}[delivery.queue]
    if result.status != expected:
        raise Malformed(f"status {result.status!r} on the {delivery.queue} queue")
    base: dict[str, Any] = {
        "workflow_id": _workflow_id(delivery, result.workflow_id),
        "cause": message_key(delivery),
        "job_id": result.job_id,
    }
    if result.status == "completed":
        return cmd.RecordCompleted(
            **base, outputs=p.from_parameters(result.parameters),
            destination_paths=tuple(result.destination_paths),
            execution_duration=result.execution_duration, worker=result.instance_id,
        )
    if result.status == "error":
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
        workflow_id=_workflow_id(delivery, order.workflow_id),
        cause=f"unroutable:{message_key(delivery)}",
        job_id=order.job_id,
        job_type=str(job_type or getattr(delivery, "routing_key", "") or "unknown"),
    )
