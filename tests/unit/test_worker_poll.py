"""The active backend asks every worker its status now and then: an original SDK worker
never announces itself again after it starts, and would look gone in the workers view."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from amqp_fixtures import eventually

from stepflow.adapters import protocol as p
from stepflow.adapters.embedded import EmbeddedRuntime
from stepflow.adapters.worker_poll import status_request
from stepflow.engine.application import WorkflowEngine
from stepflow.sdk import Worker


def memory_engine() -> WorkflowEngine:
    return WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def test_the_request_is_a_status_order_broadcast_as_the_original_sdk_binds_it() -> None:
    message = status_request()
    assert msgspec.json.decode(message.body) == {"type": "status"}
    assert message.headers == {"broadcast": "true"}  # a string: an AMQP boolean reaches no mcai worker


async def test_every_worker_answers_the_backends_status_polls() -> None:
    statuses: list[p.WorkerStatus] = []

    def on_worker(message: Any, at: datetime) -> None:
        if isinstance(message, p.WorkerStatus):
            statuses.append(message)

    worker = Worker("polled", instance_id="polled-1", heartbeat_s=3600)  # no heartbeat meanwhile

    @worker.job("noop")
    async def noop(params: dict[str, Any], ctx: Any) -> dict[str, Any]:
        return {}

    async with EmbeddedRuntime(memory_engine(), [worker], worker_poll_s=0.05, on_worker=on_worker):
        await eventually(lambda: len(statuses) >= 2, what="two answered polls")
    assert {s.instance for s in statuses} == {"polled-1"}
