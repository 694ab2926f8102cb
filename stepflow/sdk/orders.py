"""Reading a job order, and telling which job an unreadable one was.

A worker must never be stopped or wedged by an order: anything that makes one unusable is
raised here, in one place, so the run loop can answer it (`invalid_order`) or quarantine it
instead. Everything a bad order's text reaches (answers, logs) goes through `describe` /
`loggable` first, which keep it valid UTF-8 and bounded.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from stepflow.adapters import protocol as p
from stepflow.engine.ports import Delivery

INVALID_ORDER = "invalid_order"  # the error kind of an order the worker cannot read
MAX_ERROR_TEXT = 500  # characters of an exception's text kept in an invalid_order answer
MAX_HANDLER_ERROR_TEXT = 4_000  # characters of a handler's error message sent to the backend
MAX_JOB_ID_BYTES = 200  # ids longer than this could not name a response (AMQP short strings)
MAX_ATTEMPT = 1_000_000_000


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
    if isinstance(order.job_id, int):
        if not 0 <= order.job_id <= p.MAX_WIRE_INT:
            raise ValueError(f"job_id {order.job_id} is not an unsigned 64-bit integer")
    else:
        _check_id(order.job_id, "job_id")
    if not 0 <= order.attempt <= MAX_ATTEMPT:
        raise ValueError(f"attempt {order.attempt} is out of range")
    job_type = _header(headers, "job_type") or getattr(delivery, "routing_key", None) or delivery.queue
    _check_id(job_type, "job type")
    workflow_id = _header(headers, "workflow_id") or order.workflow_id or ""
    if workflow_id:
        _check_id(workflow_id, "workflow_id")
    return order, job_type, workflow_id


def recover_ids(delivery: Delivery) -> tuple[str, str, str] | None:
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


# --- text that may come from a bad order -----------------------------------------------------


def describe(error: BaseException, limit: int, *, bare: bool = False) -> str:
    """`Type: text` (or the text alone), valid UTF-8, at most `limit` characters."""
    try:
        text = str(error)
    except Exception:  # noqa: BLE001
        text = "<unprintable>"
    return _text(text if bare else f"{type(error).__name__}: {text}", limit)


def loggable(value: Any) -> str | None:
    return None if value is None else _text(value, 200)


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 1] + "…"
