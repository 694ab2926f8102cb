"""Property: whatever arrives on the backend's queues, the backend neither raises nor blocks;
every delivery is settled (acked, or quarantined with a reason and a `MessageQuarantined`
event); the workflows it touches keep an exactly-once log. In-process: a real `Backend` and
engine (in memory) over the in-memory broker, thousands of batches of generated garbage
mixed with valid and near-valid responses. The 10,000-message run over RabbitMQ with a real
`stepflow serve` is tests/faults/test_fuzz_inbound.py.

Examples: 1000 by default, x10 (or x$STEPFLOW_SOAK) with STEPFLOW_SOAK set.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepflow.adapters import protocol as p
from stepflow.adapters.backend import Backend
from stepflow.adapters.memory.broker import BACKEND_QUEUES, MemoryBroker, MemoryDelivery
from stepflow.engine import events as ev
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.definitions import build_definition

_SOAK = os.environ.get("STEPFLOW_SOAK", "")
EXAMPLES = 1000 * ((int(_SOAK) if _SOAK.isdigit() and int(_SOAK) > 1 else 10) if _SOAK else 1)
MAX_BODY = 2048
TERMINAL = (ev.JobCompleted, ev.JobErrored, ev.JobTimedOut, ev.JobStopped, ev.JobUnroutable)


class World:
    """One engine and backend for the whole property run; a few live workflows to aim at."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.engine = WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
        self.broker = MemoryBroker()
        self.backend = Backend(self.engine, self.broker.backend(), max_body=MAX_BODY, batch_wait_s=0)
        definition = build_definition({"identifier": "fuzz", "steps": [
            {"id": "a", "job_type": "fuzz_a"}, {"id": "b", "job_type": "fuzz_b", "parents": ["a"]}]})
        self.workflows = [self.engine.start_workflow(definition) for _ in range(3)]
        self.sent = 0
        self.quarantined = 0

    def jobs(self) -> list[tuple[str, str]]:
        return [(str(w), j) for w in self.workflows for j in self.engine.workflow_state(w).jobs]

    def close(self) -> None:
        self.loop.run_until_complete(self.backend.stop())
        self.loop.close()
        self.engine.close()


@pytest.fixture(scope="module")
def world() -> Any:
    made = World()
    yield made
    made.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
message_ids = st.none() | st.sampled_from(["dup-1", "dup-2", "dup-3"]) | st.text(min_size=1, max_size=30)
content_types = st.sampled_from([p.CONTENT_TYPE, None, "application/json; charset=utf-8", "text/plain",
                                 "application/x-python-pickle"]) | st.text(max_size=15)


JOB, WF = "@JOB@", "@WF@"  # placeholders, replaced by a live job and its workflow when built
_FIELD_NAMES = ["datetime", "instance_id", "job_id", "job_types", "parameters", "progression", "queue_name",
                "status", "workflow_id"]


@st.composite
def specs(draw: Any) -> tuple[Any, ...]:
    """A delivery to be, independent of the world's state (hypothesis replays it)."""
    queue = draw(st.sampled_from(BACKEND_QUEUES))
    target = draw(st.integers(0, 50))
    kind = draw(st.sampled_from(["bytes", "json", "near", "huge", "valid"]))
    if kind == "bytes":
        body: Any = draw(st.binary(max_size=200))
    elif kind == "json":
        body = json.dumps(draw(json_values)).encode()
    elif kind == "huge":
        body = b'{"job_id": "' + b"x" * draw(st.integers(MAX_BODY, 3 * MAX_BODY)) + b'"}'
    else:
        fields: dict[str, Any] = {
            "job_id": draw(st.sampled_from([JOB, "no-such-job"]) | json_values),
            "status": draw(st.sampled_from(["completed", "error", "stopped", "weird"])),
            "workflow_id": draw(st.sampled_from([WF, "00000000-0000-4000-8000-000000000000", "nope", None])),
            "progression": draw(st.integers(-10, 200) | json_values),
            "datetime": "2024-05-01T12:00:00Z",
            "parameters": draw(st.sampled_from([[], [{"id": "message", "value": "boom"}]]) | json_values),
            "instance_id": "fuzzer", "queue_name": "q", "job_types": [],
        }
        if kind == "near":
            for name in draw(st.lists(st.sampled_from(_FIELD_NAMES), max_size=3)):
                fields.pop(name, None)
        body = fields
    headers = draw(st.sampled_from([{}, {"workflow_id": WF}, {"workflow_id": "zz"}, {"job_type": "fuzz_a"}]))
    return queue, target, body, headers, draw(message_ids), draw(content_types)


def build(spec: tuple[Any, ...], world: World) -> MemoryDelivery:
    queue, target, body, headers, message_id, content_type = spec
    jobs = world.jobs()
    workflow_id, job_id = jobs[target % len(jobs)]
    if isinstance(body, dict):
        body = json.dumps({k: (job_id if v == JOB else workflow_id if v == WF else v)
                           for k, v in body.items()}).encode()
    headers = {k: (workflow_id if v == WF else v) for k, v in headers.items()}
    return MemoryDelivery(queue=queue, body=body, message_id=message_id, headers=headers,
                          content_type=content_type)


def test_any_inbound_batch_is_settled_and_keeps_the_log_exactly_once(world: World) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(drawn=st.lists(specs(), min_size=1, max_size=12))
    def prop(drawn: list[tuple[Any, ...]]) -> None:
        batch = [build(spec, world) for spec in drawn]
        broker = world.broker
        before = len(broker.quarantined)
        for delivery in batch:
            broker.queue(delivery.queue).put(delivery)
        taken = world.loop.run_until_complete(world.backend.broker.next_batch(len(batch) + 1, 0))
        assert sorted(d.tag for d in taken) == sorted(d.tag for d in batch)
        world.loop.run_until_complete(asyncio.wait_for(world.backend.handle_batch(taken), 30))
        assert not broker._unacked, "every delivery is acked or quarantined"
        new = broker.quarantined[before:]
        assert all(isinstance(reason, str) and reason for _, reason in new)
        assert all(d.body == next(b for b in batch if b.tag == d.tag).body for d, _ in new)  # kept as is
        world.sent += len(batch)
        world.quarantined += len(new)

    prop()
    # the log: contiguous versions, each job submitted once and ended at most once
    for workflow_id in world.workflows:
        history = world.engine.history(workflow_id)
        assert [e.originator_version for e in history] == list(range(1, len(history) + 1))
        submitted = Counter(e.job_id for e in history if isinstance(e, ev.JobSubmitted))
        ended = Counter(e.job_id for e in history if isinstance(e, TERMINAL))
        assert max(submitted.values()) == 1 and (not ended or max(ended.values()) == 1)
        steps = Counter(e.step_id for e in history if isinstance(e, ev.StepCompleted))
        assert not steps or max(steps.values()) == 1
    recorded = world.engine.notifications(0, 10**6, topics=("MessageQuarantined",))
    assert 0 < len(recorded) <= world.quarantined
    assert world.sent >= EXAMPLES
    print(f"\nfuzz (in-process): {world.sent} deliveries, {world.quarantined} quarantined, "
          f"{len(recorded)} MessageQuarantined events")
