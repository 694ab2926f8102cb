"""stepflow builds its messages' AMQP properties itself (`persistent`, `kept_copy`), not through
`aio_pika.Message`: the properties on the wire must be the ones aio-pika would have sent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import pytest

from stepflow.adapters import protocol as p
from stepflow.adapters.amqp.topology import kept_copy, persistent

FIELDS = ("app_id", "content_encoding", "content_type", "correlation_id", "delivery_mode", "expiration", "headers",
          "message_id", "message_type", "priority", "reply_to", "user_id")


def _fields(properties: Any) -> dict[str, Any]:
    return {name: getattr(properties, name) for name in FIELDS}


@pytest.mark.parametrize("options", [
    {},
    {"headers": {"workflow_id": "w", "n": 3}, "priority": 7},
    {"priority": 0, "expiration_s": 2.5},
    {"expiration_s": 0.2},
])
def test_persistent_sends_what_aio_pika_would(options: dict[str, Any]) -> None:
    before = datetime.now(UTC)
    ours = persistent(b'{"a":1}', message_id="j1", **options)
    theirs = aio_pika.Message(b'{"a":1}', message_id="j1", content_type=p.CONTENT_TYPE,
                              delivery_mode=aio_pika.DeliveryMode.PERSISTENT, headers=options.get("headers") or {},
                              priority=options.get("priority") or None, expiration=options.get("expiration_s"))
    assert ours.body == theirs.body
    assert _fields(ours.properties) == _fields(theirs.properties)
    assert before <= ours.properties.timestamp <= datetime.now(UTC) + timedelta(seconds=1)
    assert ours.properties.marshal() == _with_timestamp(theirs, ours.properties.timestamp).properties.marshal()


def _with_timestamp(message: aio_pika.Message, at: datetime) -> aio_pika.Message:
    message.timestamp = at
    return message


@pytest.mark.parametrize(("message_id", "content_type"), [("m1", "application/json"), (None, None)])
def test_a_kept_copy_sends_what_aio_pika_would(message_id: str | None, content_type: str | None) -> None:
    headers = {"x-quarantine-reason": "bad", "x-original-queue": "q"}
    ours = kept_copy(b"\xff", message_id=message_id, content_type=content_type, headers=headers)
    theirs = aio_pika.Message(b"\xff", message_id=message_id, content_type=content_type, headers=headers,
                              delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
    assert ours.properties.marshal() == theirs.properties.marshal()
