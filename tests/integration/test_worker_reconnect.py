"""A `stepflow worker` process whose connection the broker closes comes back with its direct
queue bound as before (every binding), and direct orders reach it again.

aio-pika's robust queue remembers one binding per (exchange, routing key); the direct queue's
bindings differ only in their header arguments, so aio-pika alone restored only the last one
(`job_type=<last type>`), and stop orders by instance id or broadcast were lost.

The test is the backend here: it publishes orders and direct orders itself and reads the
worker's answers from the response queues.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import amqp_fixtures
import msgspec
import pytest
from amqp_fixtures import (
    ROOT,
    Procs,
    Rabbit,
    close_connections,
    journal_lines,
    slow_sleep,
    wait_until,
)

from stepflow.adapters import protocol as p
from stepflow.sdk import Worker

pytestmark = [pytest.mark.integration, pytest.mark.rabbitmq, pytest.mark.e2e]
rabbit, procs_factory = amqp_fixtures.rabbit, amqp_fixtures.procs_factory  # the fixtures

# Loaded by the worker process (`stepflow worker <this file>:multi`): two job types, so the
# direct queue has four bindings (instance id, broadcast, one per type).
multi = Worker("multi-test", version="1.0.0", prefetch=2, heartbeat_s=1.0)
multi.job("slow_sleep")(slow_sleep)
multi.job("slow_other")(slow_sleep)
TYPES = ("slow_sleep", "slow_other")


def rabbitmqctl(*args: str) -> list[list[str]]:
    out = subprocess.run(["rabbitmqctl", *args, "-q", "--no-table-headers"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return [line.split("\t") for line in out.splitlines() if line.strip()]


def bindings_of(queue: str) -> list[tuple[str, str]]:
    """(exchange, arguments) of every binding of a queue, sorted (not the default exchange's)."""
    rows = rabbitmqctl("list_bindings", "-p", "/", "source_name", "destination_name", "arguments")
    return sorted((row[0], row[2]) for row in rows if len(row) >= 3 and row[1] == queue and row[0])


def connections_named(name: str) -> set[str]:
    rows = rabbitmqctl("list_connections", "pid", "client_properties")
    return {row[0] for row in rows if len(row) >= 2 and name in row[1]}


def owner_of(queue: str) -> str | None:
    """The pid of the connection that owns an exclusive queue (None while there is none)."""
    rows = rabbitmqctl("list_queues", "-p", "/", "name", "owner_pid")
    return next((row[1] for row in rows if len(row) >= 2 and row[0] == queue), None)


def queue_counts(*queues: str) -> dict[str, tuple[int, int]]:
    """(messages, unacknowledged) of these queues."""
    rows = rabbitmqctl("list_queues", "-p", "/", "name", "messages", "messages_unacknowledged")
    return {row[0]: (int(row[1]), int(row[2])) for row in rows if row[0] in queues}


def start_worker(procs: Procs) -> Any:
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests")])  # this module imports amqp_fixtures
    return procs.worker("wC", f"{Path(__file__).resolve()}:multi", PYTHONPATH=path)


def publish_order(rabbit: Rabbit, job_type: str, job_id: str, **parameters: Any) -> None:
    workflow_id = str(uuid.uuid4())
    order = p.JobOrder(job_id=job_id, parameters=p.to_parameters(parameters), workflow_id=workflow_id)
    asyncio.run(rabbit.publish(p.JOB_SUBMIT, job_type, p.encoder.encode(order), message_id=job_id,
                               content_type=p.CONTENT_TYPE,
                               headers={"workflow_id": workflow_id, "job_type": job_type}))


def publish_direct(rabbit: Rabbit, kind: str, job_id: str | None = None, **headers: Any) -> None:
    body = p.encoder.encode(p.DirectOrder(type=kind, job_id=job_id))  # type: ignore[arg-type]
    asyncio.run(rabbit.publish(p.DIRECT_MESSAGING, "", body, message_id=f"{kind}-{uuid.uuid4().hex}",
                               content_type=p.CONTENT_TYPE, headers=headers))


class Answers:
    """Messages taken from a response queue so far."""

    def __init__(self, rabbit: Rabbit, queue: str) -> None:
        self.rabbit, self.queue, self.seen = rabbit, queue, []  # type: list[Any]

    def take(self) -> list[Any]:
        self.seen.extend(asyncio.run(self.rabbit.take_all(self.queue)))
        return self.seen

    def ids(self) -> set[str]:
        return {m.message_id for m in self.take()}


def test_a_worker_gets_every_direct_binding_back_after_its_connection_is_closed(
        rabbit: Rabbit, tmp_path: Path, procs_factory: Callable[[str], Procs]) -> None:
    rabbit.job_types.update(TYPES)
    procs = procs_factory("memory://")
    worker = start_worker(procs)
    direct = f"{rabbit.prefix}{p.DIRECT_MESSAGING}_{worker.instance_id}"
    name = f"stepflow-worker[{rabbit.prefix}]{worker.instance_id}"
    before = wait_until(lambda: len(b := bindings_of(direct)) == 4 and b, 30, "the direct queue's 4 bindings",
                        context=procs.logs)
    arguments = " ".join(args for _, args in before)
    for expected in (worker.instance_id, "broadcast", *TYPES):
        assert expected in arguments, before

    # A job runs while the broker closes the worker's connection.
    hold, journal = tmp_path / "hold", tmp_path / "journal"
    hold.touch()
    job_a, job_b = f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    publish_order(rabbit, "slow_sleep", job_a, hold=str(hold), journal=str(journal))
    wait_until(lambda: journal_lines(journal), 20, "job a to start", context=procs.logs)
    old = connections_named(name)
    assert len(old) == 1, old
    assert close_connections(name) == 1

    (new,) = wait_until(lambda: connections_named(name) - old, 30, "the worker to reconnect", context=procs.logs)
    # The old queue went with the old connection; the one now there is the reconnection's.
    wait_until(lambda: owner_of(direct) == new, 30, "the direct queue to be declared again", context=procs.logs)
    wait_until(lambda: bindings_of(direct) == before, 30, "every direct binding to be back",
               context=lambda: f"bindings now: {bindings_of(direct)}\nbefore: {before}\n{procs.logs()}")
    # Its order, requeued when the channel closed, came back and joined the run still going.
    wait_until(lambda: "order_redelivered_while_running" in worker.log(), 20, "the redelivery of job a",
               context=procs.logs)

    # Direct orders by instance id, by broadcast and by job type all reach it.
    stopped = Answers(rabbit, p.JOB_STOPPED)
    publish_direct(rabbit, "stop_process", job_a, instance_id=worker.instance_id)
    wait_until(lambda: f"{job_a}:stopped" in stopped.ids(), 20, "job a's job_stopped", context=procs.logs)

    publish_order(rabbit, "slow_other", job_b, hold=str(hold), journal=str(journal))
    wait_until(lambda: [line for line in journal_lines(journal) if line[:2] == ["start", job_b]], 20,
               "job b to start", context=procs.logs)
    publish_direct(rabbit, "stop_process", job_b, broadcast="true")
    wait_until(lambda: f"{job_b}:stopped" in stopped.ids(), 20, "job b's job_stopped", context=procs.logs)

    statuses = Answers(rabbit, p.WORKER_STATUS)
    publish_direct(rabbit, "status", job_type="slow_other")
    wait_until(lambda: statuses.take(), 20, "the status answer", context=procs.logs)
    (status,) = statuses.seen
    assert msgspec.json.decode(status.body)["instance_id"] == worker.instance_id

    assert [line[:2] for line in journal_lines(journal)] == [
        ["start", job_a], ["cancelled", job_a], ["start", job_b], ["cancelled", job_b]]  # a ran once
    for message in stopped.seen:
        assert msgspec.json.decode(message.body)["status"] == "stopped"
    queues = [rabbit.prefix + t for t in TYPES]
    wait_until(lambda: queue_counts(*queues) == {q: (0, 0) for q in queues}, 20, "nothing left held",
               context=lambda: f"{queue_counts(*queues)}\n{procs.logs()}")
    assert worker.alive()
    assert bindings_of(direct) == before
