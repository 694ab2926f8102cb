"""Orders inside the process are stored events; the wire message is built at the broker.

The outbox's `Dispatch` routes by event fields (job or notification step), arms deadlines from
them, and hands the broker typed events; `order_message` / `stop_message` give the Step Flow
shapes both brokers publish.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from stepflow.adapters import protocol as p
from stepflow.adapters.deadlines import Deadlines
from stepflow.adapters.memory.broker import MemoryBroker
from stepflow.adapters.notify.notifications import Notifier
from stepflow.adapters.orders import order_message, stop_message
from stepflow.adapters.outbox import Dispatch, OutboxReader
from stepflow.engine import commands as cmd
from stepflow.engine import events as ev
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.definitions import build_definition
from stepflow.engine.ports import StopJob


def memory_engine() -> WorkflowEngine:
    return WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def one_step(job_type: str = "echo", **step: Any) -> Any:
    return build_definition({"identifier": "t", "steps": [{"id": "only", "job_type": job_type, **step}]})


def test_order_message_matches_the_step_flow_shape() -> None:
    engine = memory_engine()
    workflow_id = engine.start_workflow(one_step(parameters={"x": 3, "names": ["a", "b"]}))
    submitted = next(e for e in engine.history(workflow_id) if isinstance(e, ev.JobSubmitted))

    message = order_message(submitted)
    body = msgspec.json.decode(message.body)
    # the original's integer job id; the engine's own id stays the message id
    assert isinstance(submitted.wire_id, int) and body["job_id"] == submitted.wire_id and body["type"] == "job"
    assert {"id": "x", "type": "integer", "value": 3} in body["parameters"]
    assert {"id": "names", "type": "array_of_strings", "value": ["a", "b"]} in body["parameters"]
    assert message.message_id == submitted.job_id and message.routing_key == "echo"
    assert message.headers["workflow_id"] == str(workflow_id)


def test_order_message_carries_priority_delay_and_timeout_from_the_event() -> None:
    engine = memory_engine()
    workflow_id = engine.start_workflow(one_step(timeout_s=7))
    submitted = next(e for e in engine.history(workflow_id) if isinstance(e, ev.JobSubmitted))
    submitted = msgspec.structs.replace(submitted, priority=4, delay_s=1.5)
    message = order_message(submitted)
    assert (message.priority, message.delay_s) == (4, 1.5)
    assert message.headers == {"workflow_id": str(workflow_id), "job_type": "echo", "step_id": "only",
                               "attempt": 1, "timeout_s": 7.0}  # no in-process-only header ("mode")
    assert p.decode_order(message.body).timeout_s == 7.0


def test_an_order_stored_before_wire_ids_goes_out_with_the_engine_job_id() -> None:
    engine = memory_engine()
    workflow_id = engine.start_workflow(one_step())
    submitted = next(e for e in engine.history(workflow_id) if isinstance(e, ev.JobSubmitted))
    old = msgspec.structs.replace(submitted, wire_id=None)
    assert msgspec.json.decode(order_message(old).body)["job_id"] == submitted.job_id


def test_a_stop_goes_to_the_instance_holding_the_job_alone_in_the_original_shape() -> None:
    workflow_id = uuid.uuid4()
    message = stop_message(StopJob(workflow_id=workflow_id, job_id="j-1", wire_id=77, instance_id="i-9"))
    assert msgspec.json.decode(message.body) == {"type": "stop_process", "job_id": 77, "parameters": []}
    assert message.message_id == "stop:j-1"
    # x-match=any: one more matching header would reach other workers, which stop whatever they run
    assert message.headers == {"instance_id": "i-9", "workflow_id": str(workflow_id)}


def test_a_stop_for_a_job_no_instance_reported_goes_to_stepflow_workers_only() -> None:
    workflow_id = uuid.uuid4()
    message = stop_message(StopJob(workflow_id=workflow_id, job_id="j-1"))
    assert p.decode_direct(message.body) == p.DirectOrder(type="stop_process", job_id="j-1", parameters=[])
    assert message.headers == {"stepflow_broadcast": "true", "workflow_id": str(workflow_id)}


def test_the_outbox_reads_stored_orders_and_the_jobs_a_stop_ends() -> None:
    engine = memory_engine()
    two = build_definition({"identifier": "two", "steps": [{"id": "a", "job_type": "echo"},
                                                           {"id": "b", "job_type": "echo"}]})
    workflow_id = engine.start_workflow(two)
    engine.command(cmd.StopWorkflow(workflow_id=workflow_id))
    last, orders, stops = OutboxReader(engine).next_batch()
    assert last == engine.max_notification_id()
    assert all(isinstance(o, ev.JobSubmitted) for o in orders) and len(orders) == 2
    assert stops == [StopJob(workflow_id=workflow_id, job_id=o.job_id, wire_id=o.wire_id) for o in orders]


class Recorded:
    """A broker port that keeps what it was handed."""

    def __init__(self) -> None:
        self.orders: list[ev.JobSubmitted] = []
        self.stops: list[StopJob] = []

    async def publish_orders(self, orders: Sequence[ev.JobSubmitted]) -> None:
        self.orders.extend(orders)

    async def publish_stops(self, stops: Sequence[StopJob]) -> None:
        self.stops.extend(stops)


class Submitted(Notifier):
    def __init__(self) -> None:
        super().__init__(allowed_hosts=())
        self.submitted: list[ev.JobSubmitted] = []

    def submit(self, order: ev.JobSubmitted) -> None:
        self.submitted.append(order)


def order(job_id: str, *, mode: str = "job", timeout_s: float | None = None) -> ev.JobSubmitted:
    return ev.JobSubmitted(originator_id=uuid.uuid4(), originator_version=2, timestamp=datetime.now(UTC),
                           job_id=job_id, step_id="s", index=0, attempt=1, job_type="echo", parameters={},
                           timeout_s=timeout_s, mode=mode)


async def test_dispatch_routes_by_the_event_and_arms_deadlines_from_it() -> None:
    broker, notifier, deadlines = Recorded(), Submitted(), Deadlines()
    dispatch = Dispatch(broker, notifier, deadlines)  # type: ignore[arg-type]
    job, call, timed_call = order("job"), order("call", mode="notification"), order("tc", mode="notification",
                                                                                   timeout_s=3)
    stop = StopJob(workflow_id=uuid.uuid4(), job_id="old")
    await dispatch.publish([job, call, timed_call], [stop])
    assert broker.orders == [job] and broker.stops == [stop]
    assert notifier.submitted == [call, timed_call]
    assert deadlines.armed() == {"tc": (timed_call.originator_id, 3.0)}
    assert dispatch.published == 3  # jobs and notification calls, as `orders_published_total` counts


async def test_the_in_process_broker_builds_the_wire_message_at_its_edge() -> None:
    broker = MemoryBroker()
    broker.bindings["echo"] = "echo"
    side = broker.backend()
    job = order("j-9")
    worker = broker.worker()
    await worker.consume_direct("w-1", ["echo"])
    await side.publish_orders([job])
    await side.publish_stops([StopJob(workflow_id=job.originator_id, job_id="j-9")])
    delivered = broker.queue("echo").pop()
    assert delivered is not None and delivered.body == order_message(job).body
    assert dict(delivered.headers) == dict(order_message(job).headers)
    stopped = broker.queue(f"{p.DIRECT_MESSAGING}_w-1").pop()
    assert stopped is not None and p.decode_direct(stopped.body).job_id == "j-9"
