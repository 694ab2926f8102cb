"""No order can stop a worker (in-process broker): every order that cannot be read is answered
`job_error` of kind `invalid_order` when its ids can be told from its message id and headers,
or rejected to the quarantine otherwise; none stays held; the next good order is served.
Also `protocol.check_depth`, the scan that keeps a deeply nested body from reaching msgspec."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec
import pytest
from amqp_fixtures import eventually

from stepflow.adapters import protocol as p
from stepflow.adapters.memory.broker import MemoryBroker, MemoryDelivery
from stepflow.sdk import JobContext, Worker
from stepflow.sdk.orders import INVALID_ORDER, MAX_ERROR_TEXT

PILL = b'{"a":' * 1500  # msgspec raises RecursionError on this, not DecodeError
WORKFLOW = str(uuid.uuid4())
GOOD_HEADERS = {"workflow_id": WORKFLOW, "job_type": "echo"}


# --- check_depth ---------------------------------------------------------------------------


def too_deep(body: bytes, limit: int = p.MAX_DEPTH) -> bool:
    try:
        p.check_depth(body, limit)
    except ValueError as error:
        assert str(error) == f"nested deeper than {limit}"
        return True
    return False


@pytest.mark.parametrize("body, deep", [
    (PILL, True),
    (b"[" * 64 + b"]" * 64, False),
    (b"[" * 65 + b"]" * 65, True),
    (b"[" * 65, True),  # unclosed counts too
    (b'{"a":' * 64 + b"1" + b"}" * 64, False),
    (b"[]" * 100_000, False),  # many, not deep
    (b'["' + b"[" * 5000 + b'"]', False),  # brackets in a string do not count
    (b'["\\"' + b"[" * 5000 + b'"]', False),  # nor after an escaped quote, still in the string
    (b'["\\\\"' + b"[" * 100 + b"]" * 100 + b"]", True),  # an escaped backslash ends no string
    (b'["\\\\\\"' + b"[" * 100 + b'"]', False),  # backslash, then escaped quote: still inside
    (b'"unterminated \\', False),
    (json.dumps({"p": [{"v": [1, {"w": "]]]}}}{{{{[[[["}]}] * 300}).encode(), False),
])
def test_check_depth_counts_brackets_outside_strings(body: bytes, deep: bool) -> None:
    assert too_deep(body) is deep


def test_check_depth_takes_a_limit_and_its_error_is_a_decode_error_too() -> None:
    assert too_deep(b"[" * 6 + b"]" * 6, 5) and not too_deep(b"[" * 5 + b"]" * 5, 5)
    assert too_deep(b"[" * 9000 + b"]" * 9000, 8500) and not too_deep(b"[" * 8500 + b"]" * 8500, 8500)
    with pytest.raises(msgspec.DecodeError):  # so every `except msgspec.DecodeError` catches it
        p.check_depth(PILL)


@pytest.mark.parametrize("decode", [p.decode_order, p.decode_result, p.decode_progression, p.decode_discovery,
                                    p.decode_status, p.decode_direct])
def test_every_decode_helper_refuses_a_too_deep_body_before_msgspec_sees_it(decode: Any) -> None:
    for body in (PILL, b'{"a":' * 100_000, b"[" * 65 + b"]" * 65):
        with pytest.raises(p.NestedTooDeep, match="nested deeper than 64"):
            decode(body)


def test_a_deep_but_allowed_value_still_decodes() -> None:
    value = b"[" * 60 + b"1" + b"]" * 60
    order = p.decode_order(b'{"job_id": "j", "parameters": [{"id": "v", "value": ' + value + b"}]}")
    assert order.parameters[0].value == json.loads(value)


# --- the worker ----------------------------------------------------------------------------


class Exploding(Mapping[str, Any]):
    """Headers whose every read raises: 'anything' while reading an order."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __getitem__(self, key: str) -> Any:
        raise self.error

    def get(self, key: str, default: Any = None) -> Any:
        raise self.error

    def __iter__(self) -> Iterator[str]:
        raise self.error

    def __len__(self) -> int:
        return 1


def order_body(**fields: Any) -> bytes:
    return json.dumps({"job_id": "j", "parameters": [], **fields}).encode()


# (name, body, headers, message id, answered?): answered means the ids can be recovered from
# the message id and headers (a job_error is sent), else the order goes to the quarantine.
BAD_ORDERS: list[tuple[str, Any, Any, Any, bool]] = [
    ("pill", PILL, GOOD_HEADERS, "job-pill", True),
    ("pill, no ids", PILL, {}, None, False),
    ("pill, message id only", PILL, {"job_type": "echo"}, "job-pill-2", False),
    ("not json", b"{not json", GOOD_HEADERS, "job-notjson", True),
    ("invalid utf-8", b'{"job_id": "j\xff\xfe", "parameters": []}', GOOD_HEADERS, "job-utf8", True),
    ("lone surrogate", rb'{"job_id": "j\ud800", "parameters": []}', GOOD_HEADERS, "job-surrogate", True),
    ("nul byte", b'{"job_id": "j\x00", "parameters": []}', GOOD_HEADERS, "job-nul", True),
    ("huge number", order_body(attempt=10**30), GOOD_HEADERS, "job-huge", True),
    ("huge float", b'{"job_id": "j", "parameters": [{"id": "x", "value": 1e400}]}', GOOD_HEADERS, "job-inf", True),
    ("many digits", b'{"job_id": "j", "parameters": [{"id": "x", "value": ' + b"9" * 50_000 + b"}]}",
     GOOD_HEADERS, "job-digits", True),
    ("wrong shape", b'{"job_id": 5, "parameters": {}}', GOOD_HEADERS, "job-shape", True),
    ("empty job id", order_body(job_id=""), GOOD_HEADERS, "job-empty", True),
    ("over the size limit", order_body(pad="x" * (p.MAX_BODY_BYTES + 1)), GOOD_HEADERS, "job-big", True),
    ("job_type header an int", order_body(), {"workflow_id": WORKFLOW, "job_type": 5}, "job-jt", True),
    ("workflow_id header a list", order_body(), {"workflow_id": [1], "job_type": "echo"}, "job-wf", False),
    ("header bytes not utf-8", order_body(), {"workflow_id": WORKFLOW, "job_type": b"\xff"}, "job-hb", True),
    ("headers raise KeyError", order_body(), Exploding(KeyError("boom")), "job-key", False),
    ("headers raise RuntimeError", order_body(), Exploding(RuntimeError("boom")), "job-rt", False),
    ("headers not a mapping", order_body(), ["workflow_id"], "job-list", False),
    ("body not bytes", "{}", GOOD_HEADERS, "job-str", True),
    ("message id not a string", PILL, GOOD_HEADERS, 12345, False),
    ("message id a lone surrogate", PILL, GOOD_HEADERS, "job-\ud800", False),
    ("message id too long", PILL, GOOD_HEADERS, "j" * 300, False),
]


async def test_bad_orders_are_answered_or_quarantined_and_the_worker_serves_the_next_good_one() -> None:
    broker = MemoryBroker()
    worker = Worker("echo", heartbeat_s=60, prefetch=1)
    ran: list[str] = []

    @worker.job("echo")
    async def echo(params: dict, ctx: JobContext) -> dict:
        ran.append(ctx.job_id)
        return {"ok": True}

    stop = asyncio.Event()
    side = broker.worker()
    task = asyncio.create_task(worker.run(side, stop=stop))
    await eventually(lambda: "echo" in broker.bindings)
    for name, body, headers, message_id, _ in BAD_ORDERS:
        broker.queue("echo").put(MemoryDelivery(queue="echo", body=body, message_id=message_id,
                                                headers=headers, routing_key="echo"))
    good = p.JobOrder(job_id="good-1", parameters=[], workflow_id=WORKFLOW)
    await broker.route_order(p.Message(routing_key="echo", body=p.encoder.encode(good), message_id="good-1",
                                       headers=GOOD_HEADERS))
    await eventually(lambda: worker.completed == 1)
    assert not task.done(), "the worker stopped"
    assert ran == ["good-1"]  # prefetch 1: every bad order was settled before the good one ran
    await eventually(lambda: not broker._unacked)  # nothing held

    errors = {d.message_id: msgspec.json.decode(d.body) for d in iter(broker.queue(p.JOB_ERROR).pop, None)}
    quarantined = [d for d, _ in broker.quarantined]
    answered = {m: n for n, _, _, m, a in BAD_ORDERS if a}
    assert set(errors) == {f"{m}:error" for m in answered}
    for message_id, body in errors.items():
        job_id = message_id.removesuffix(":error")
        assert body["job_id"] == job_id and body["workflow_id"] == WORKFLOW
        assert body["status"] == "error" and body["error_kind"] == INVALID_ORDER
        message = next(x["value"] for x in body["parameters"] if x["id"] == "message")
        assert ": " in message and len(message) <= MAX_ERROR_TEXT, message
    assert [d.message_id for d in quarantined] == [m for _, _, _, m, a in BAD_ORDERS if not a]
    assert worker.invalid_orders == len(BAD_ORDERS)

    def reason(message_id: str) -> str:
        body = errors[f"{message_id}:error"]
        return next(x["value"] for x in body["parameters"] if x["id"] == "message")

    assert reason("job-pill") == "NestedTooDeep: nested deeper than 64"
    assert reason("job-big").startswith("ValueError: body of ")
    assert reason("job-jt") == "TypeError: header job_type is int, not a string"
    assert reason("job-hb").startswith("UnicodeDecodeError: ")
    assert reason("job-empty") == "ValueError: job_id is empty"
    assert reason("job-huge") == f"ValueError: attempt {10**30} is out of range"
    assert reason("job-notjson").startswith("DecodeError: ")
    completed = [d for d in iter(broker.queue(p.JOB_COMPLETED).pop, None)]
    assert [d.message_id for d in completed] == ["good-1:completed"]

    # A poison order redelivered is answered again the same way (same message id).
    await broker.publish("echo", p.Message(routing_key="echo", body=PILL, message_id="job-pill",
                                           headers=GOOD_HEADERS))
    await eventually(lambda: len(broker.queue(p.JOB_ERROR)) == 1)
    again = broker.queue(p.JOB_ERROR).pop()
    assert again is not None and again.message_id == "job-pill:error"
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_a_handler_error_with_unencodable_text_is_still_answered() -> None:
    """Lone surrogates in a handler's error or outputs cannot be encoded as JSON; the worker
    still answers (escaped) and acks, and goes on."""
    broker = MemoryBroker()
    worker = Worker("odd", heartbeat_s=60)

    @worker.job("odd")
    async def odd(params: dict, ctx: JobContext) -> dict:
        if params.get("fail"):
            raise RuntimeError("bad \ud800 text")
        return {"text": "bad \udc00 output"}

    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(broker.worker(), stop=stop))
    await eventually(lambda: "odd" in broker.bindings)
    for job_id, fail in (("j-fail", True), ("j-output", False)):
        order = p.JobOrder(job_id=job_id, parameters=p.to_parameters({"fail": fail}), workflow_id=WORKFLOW)
        await broker.route_order(p.Message(routing_key="odd", body=p.encoder.encode(order), message_id=job_id,
                                           headers={"workflow_id": WORKFLOW, "job_type": "odd"}))
    await eventually(lambda: worker.completed == 2)
    errors = {d.message_id: msgspec.json.decode(d.body) for d in iter(broker.queue(p.JOB_ERROR).pop, None)}
    assert set(errors) == {"j-fail:error", "j-output:error"}
    assert "\\ud800" in errors["j-fail:error"]["parameters"][0]["value"]
    assert errors["j-output:error"]["error_kind"] == "UnicodeEncodeError"
    assert not task.done() and not broker._unacked
    stop.set()
    await asyncio.wait_for(task, 5)

