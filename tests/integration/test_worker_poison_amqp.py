"""Bad job orders sent over RabbitMQ to a real `stepflow worker` process: every one is either
answered `job_error` of kind `invalid_order` or copied to the quarantine queue (and acked), none is
left held, the process lives on and completes the good orders sent after them. Some carry
bytes that are not UTF-8 in their properties or header names, which used to make the frame
unreadable and the connection close, again at each redelivery.

The test is the backend here: it publishes the orders and reads the answers itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import amqp_fixtures
import msgspec
import pytest
from amqp_fixtures import FIXTURE_WORKERS, Procs, Rabbit, wait_until

from stepflow.adapters import protocol as p
from stepflow.adapters.amqp.worker_broker import REJECTED_HEADER

pytestmark = [pytest.mark.integration, pytest.mark.rabbitmq, pytest.mark.e2e]
rabbit, procs_factory = amqp_fixtures.rabbit, amqp_fixtures.procs_factory  # the fixtures

PILL = b'{"a":' * 1500  # msgspec raises RecursionError on this, not DecodeError
WORKFLOW = str(uuid.uuid4())
IDS = {"workflow_id": WORKFLOW, "job_type": "slow_sleep"}


def order(**fields: Any) -> bytes:
    return json.dumps({"job_id": "in-body", "parameters": [], **fields}).encode()


# (message id, body, headers, answered?): answered when the job and workflow ids can be told
# from the message id and headers; the others go to the quarantine.
BAD: list[tuple[str, bytes, dict[str, Any], bool]] = [
    ("pill", PILL, IDS, True),
    ("pill-no-workflow", PILL, {"job_type": "slow_sleep"}, False),
    ("pill-100k", b'{"a":' * 100_000, IDS, True),
    ("deep-array", b'{"job_id": "j", "parameters": [{"id": "x", "value": ' + b"[" * 5000 + b"]" * 5000 + b"}]}",
     IDS, True),
    ("not-json", b"{not json", IDS, True),
    ("invalid-utf8", b'{"job_id": "j\xff\xfe", "parameters": []}', IDS, True),
    ("lone-surrogate", rb'{"job_id": "j\udc00", "parameters": []}', IDS, True),
    ("nul-bytes", b'{"job_id": "j\x00\x00", "parameters": []}\x00', IDS, True),
    ("huge-int", order(attempt=10**40), IDS, True),
    ("huge-float", b'{"job_id": "j", "parameters": [{"id": "x", "value": 1e999}]}', IDS, True),
    ("many-digits", b'{"job_id": "j", "parameters": [{"id": "x", "value": ' + b"7" * 100_000 + b"}]}", IDS, True),
    ("wrong-shape", b'{"job_id": ["j"], "parameters": "none"}', IDS, True),
    ("job-type-header-int", order(), {"workflow_id": WORKFLOW, "job_type": 42}, True),
    ("job-type-header-table", order(), {"workflow_id": WORKFLOW, "job_type": {"x": 1}}, True),
    ("workflow-header-int", order(), {"workflow_id": 7, "job_type": "slow_sleep"}, False),
    ("workflow-header-list", order(), {"workflow_id": [WORKFLOW], "job_type": "slow_sleep"}, False),
    ("over-size-limit", order(pad="x" * (p.MAX_BODY_BYTES + 10)), IDS, True),
    ("empty-body", b"", IDS, True),
    ("x" * 230, PILL, IDS, False),  # a message id too long to name an answer
]

# Short strings that are not UTF-8 (RabbitMQ passes them on). The publisher here sends these
# bytes where the marker strings are (see `raw_short_strings`).
RAW = {"<raw-id>": b"raw-\xff\xfe-id", "<raw-key>": b"\xc3\x28", "<raw-type>": b"application/\xff"}
RAW_ID_READ = "raw-\ufffd\ufffd-id"  # how the worker reads the message id: answered under it
ODD_BUT_GOOD: list[tuple[str, dict[str, Any], dict[str, Any]]] = [  # message id, headers, properties
    ("odd-header-name", {**IDS, "<raw-key>": "x"}, {}),
    ("odd-content-type", IDS, {"content_type": "<raw-type>"}),
]


@contextlib.contextmanager
def raw_short_strings() -> Iterator[None]:
    """While active, this process's pamqp writes the bytes of `RAW` for its marker strings."""
    from pamqp import encode

    strict = encode._string

    def raw(encoder: Any, value: str) -> bytes:
        if value in RAW:
            return encoder.pack(len(RAW[value])) + RAW[value]
        return strict(encoder, value)

    encode._string = raw
    try:
        yield
    finally:
        encode._string = strict


def queue_counts(*queues: str) -> dict[str, tuple[int, int]]:
    """(messages, unacknowledged) of these queues, from `rabbitmqctl list_queues`."""
    out = subprocess.run(["rabbitmqctl", "list_queues", "-p", "/", "name", "messages", "messages_unacknowledged",
                          "-q", "--no-table-headers"], capture_output=True, text=True, timeout=30, check=True).stdout
    rows = [line.split("\t") for line in out.splitlines() if line.strip()]
    return {row[0]: (int(row[1]), int(row[2])) for row in rows if row[0] in queues}


def test_bad_orders_never_stop_a_worker_process(rabbit: Rabbit, procs_factory: Callable[[str], Procs]) -> None:
    procs = procs_factory("memory://")
    worker = procs.worker("poisoned", FIXTURE_WORKERS)
    asyncio.run(rabbit.wait_depth("slow_sleep", consumers=1, timeout=30))

    def good(job_id: str) -> bytes:
        return p.encoder.encode(p.JobOrder(job_id=job_id, parameters=[], workflow_id=WORKFLOW))

    async def send_all() -> None:
        for message_id, body, headers, _ in BAD:
            await rabbit.publish(p.JOB_SUBMIT, "slow_sleep", body, message_id=message_id,
                                 content_type=p.CONTENT_TYPE, headers=headers)
        with raw_short_strings():
            await rabbit.publish(p.JOB_SUBMIT, "slow_sleep", PILL, message_id="<raw-id>",
                                 content_type=p.CONTENT_TYPE, headers=IDS)
            for message_id, headers, properties in ODD_BUT_GOOD:
                await rabbit.publish(p.JOB_SUBMIT, "slow_sleep", good(message_id), message_id=message_id,
                                     headers=headers, **{"content_type": p.CONTENT_TYPE, **properties})
        await rabbit.publish(p.JOB_SUBMIT, "slow_sleep", good("good"), message_id="good",
                             content_type=p.CONTENT_TYPE, headers=IDS)

    asyncio.run(send_all())
    completed: list[Any] = []
    wait_until(lambda: completed.extend(asyncio.run(rabbit.take_all(p.JOB_COMPLETED))) or len(completed) == 3,
               30, "the good orders' completions", context=procs.logs)
    assert [m.message_id for m in completed] == ["odd-header-name:completed", "odd-content-type:completed",
                                                 "good:completed"]
    assert worker.alive()

    # The worker's prefetch is 1: every bad order was settled before the good one ran.
    job_queue = rabbit.prefix + "slow_sleep"
    assert queue_counts(job_queue) == {job_queue: (0, 0)}
    errors = {m.message_id: msgspec.json.decode(m.body) for m in asyncio.run(rabbit.take_all(p.JOB_ERROR))}
    answered = [message_id for message_id, _, _, yes in BAD if yes] + [RAW_ID_READ]
    assert sorted(errors) == sorted(f"{m}:error" for m in answered), procs.logs()
    for message_id, body in errors.items():
        assert body["job_id"] == message_id.removesuffix(":error") and body["workflow_id"] == WORKFLOW
        assert body["status"] == "error" and body["error_kind"] == "invalid_order"
        (text,) = [x["value"] for x in body["parameters"] if x["id"] == "message"]
        assert ": " in text and len(text) <= 500
    assert errors["pill:error"]["parameters"][0]["value"] == "NestedTooDeep: nested deeper than 64"

    kept = asyncio.run(rabbit.take_all(p.QUARANTINE))
    assert sorted(m.message_id for m in kept) == sorted(m for m, _, _, yes in BAD if not yes)
    for message in kept:  # copied by the worker (a reject would loop through job_delayed)
        assert message.headers[REJECTED_HEADER] and "x-death" not in message.headers
        assert message.headers["x-original-queue"] == "slow_sleep"
    assert (asyncio.run(rabbit.depth(p.JOB_DELAYED)))[0] == 0
    assert worker.log().count("order_invalid") == len(BAD) + 1
    assert "Traceback" not in worker.log() and "InvalidFrameError" not in worker.log()
    assert worker.terminate() == 0, worker.log()
