"""Property: whatever arrives on the backend's queues, the backend neither raises nor blocks,
and every delivery ends in exactly one visible place: applied (an event caused by it),
counted (a duplicate, a late progression), recorded as a `LateAnswerReceived`, quarantined
(with a reason and a `MessageQuarantined` record), or, on a worker queue, read as a worker's
announcement. The workflows it touches keep an exactly-once log.

In-process: a real `Backend` and engine (in memory) over the in-memory broker, batches drawn
by Hypothesis: wide recursive JSON (`st.recursive`), nesting up to 5,000 deep built as text,
integers past 64 bits, NaN and infinities, lone surrogates, NUL bytes, bodies at the size
limit +-1, wrong-typed headers, ids of answers already applied (so duplicates and conflicting
duplicates), mixed with valid and near-valid responses. The message-by-message run over
RabbitMQ with a real `stepflow serve` and workers is tests/faults/test_fuzz_inbound.py.

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
from stepflow.adapters.backend import default_backend
from stepflow.adapters.inbox import body_digest, message_key
from stepflow.adapters.memory.broker import BACKEND_QUEUES, MemoryBroker, MemoryDelivery
from stepflow.engine import events as ev
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.definitions import build_definition

_SOAK = os.environ.get("STEPFLOW_SOAK", "")
EXAMPLES = 1000 * ((int(_SOAK) if _SOAK.isdigit() and int(_SOAK) > 1 else 10) if _SOAK else 1)
MAX_BODY = 12_288  # 5,000 levels of [ fit under it, of {"a": do not
DEEPEST = 5_000
TERMINAL = (ev.JobCompleted, ev.JobErrored, ev.JobTimedOut, ev.JobStopped, ev.JobUnroutable)
APPLIED = (ev.JobCompleted, ev.JobErrored, ev.JobStopped, ev.JobUnroutable, ev.JobProgressed)
COUNTED = ("duplicates", "late_answers", "late_progress")


class World:
    """One engine and backend for the whole property run; a few live workflows to aim at."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.engine = WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
        self.broker = MemoryBroker()
        self.backend = default_backend(self.engine, self.broker.backend(), max_body=MAX_BODY, batch_wait_s=0)
        definition = build_definition({"identifier": "fuzz", "steps": [
            {"id": "a", "job_type": "fuzz_a"}, {"id": "b", "job_type": "fuzz_b", "parents": ["a"]}]})
        self.definition = definition
        self.workflows = [self.engine.start_workflow(definition) for _ in range(3)]
        self.tally: Counter[str] = Counter()

    def jobs(self) -> list[tuple[str, str]]:
        """The jobs of the four latest workflows; a new workflow when fewer than two run, so
        there are always answers to apply, as well as late ones."""
        recent = self.workflows[-4:]
        if sum(self.engine.workflow_state(w).status == "running" for w in recent) < 2:
            self.workflows.append(self.engine.start_workflow(self.definition))
            recent = self.workflows[-4:]
        return [(str(w), j) for w in recent for j in self.engine.workflow_state(w).jobs]

    def close(self) -> None:
        self.loop.run_until_complete(self.backend.stop())
        self.loop.close()
        self.engine.close()


@pytest.fixture(scope="module")
def world() -> Any:
    made = World()
    yield made
    made.close()


# --- what arrives ------------------------------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=2**63, max_value=10**40)
           | st.floats() | st.text(max_size=20)  # floats: NaN and infinities too, not JSON
           | st.text(st.characters(codec=None, categories=["Cs", "Cc"]), max_size=4))  # surrogates, NUL
# wide rather than deep: up to a dozen items a level, sixty leaves
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=12) | st.dictionaries(st.text(max_size=8), inner, max_size=12),
    max_leaves=40,
)
message_ids = (st.none() | st.sampled_from(["dup-1", "dup-2", "dup-3"]) | st.text(min_size=1, max_size=30)
               | st.sampled_from(["@JOB@:completed", "@JOB@:error", "@JOB@:progression:1"]))  # applied ids
content_types = st.sampled_from([p.CONTENT_TYPE] * 6 + [None, "application/json; charset=utf-8", "text/plain",
                                                        "application/x-python-pickle"]) | st.text(max_size=15)
header_values = (st.sampled_from(["@WF@", "zz", "", None]) | st.integers() | st.lists(st.integers(), max_size=2)
                 | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2) | st.binary(max_size=8)
                 | st.booleans())

JOB, WF, STATUS = "@JOB@", "@WF@", "@STATUS@"  # placeholders, replaced when built: a live job, its
# workflow, the status its queue expects
_FIELD_NAMES = ["datetime", "direct_messaging_queue_name", "instance_id", "job_id", "job_types", "parameters",
                "progression", "queue_name", "status", "workflow_id"]


def deep(depth: int, style: str) -> bytes:
    return {"list": b"[" * depth + b"]" * depth, "dict": b'{"a":' * depth + b"1" + b"}" * depth,
            "open": b"[{" * depth, "string": b'{"job_id": "' + b"[" * depth + b'"}'}[style]


@st.composite
def specs(draw: Any) -> tuple[Any, ...]:
    """A delivery to be, independent of the world's state (hypothesis replays it)."""
    queue = draw(st.sampled_from(BACKEND_QUEUES))
    target = draw(st.integers(0, 50))
    kind = draw(st.sampled_from(["bytes", "json", "deep", "near", "huge", "valid", "valid", "valid", "nul"]))
    content_type = draw(content_types)
    headers = draw(st.just({}) | st.dictionaries(st.sampled_from(["workflow_id", "job_type"]), header_values,
                                                   max_size=2))
    if kind == "bytes":
        body: Any = draw(st.binary(max_size=200))
    elif kind == "json":
        body = json.dumps(draw(json_values)).encode()
    elif kind == "deep":
        body = deep(draw(st.integers(60, DEEPEST)), draw(st.sampled_from(["list", "dict", "open", "string"])))
    elif kind == "huge":  # around the limit: one under, at it, one over, far over
        body = b'{"job_id": "' + b"x" * (MAX_BODY - 14 + draw(st.sampled_from([-1, 0, 1, MAX_BODY]))) + b'"}'
    elif kind == "valid":  # a good answer for a job (live or not): only its id varies
        body = {"job_id": JOB, "status": STATUS, "workflow_id": WF, "progression": draw(st.integers(0, 100)),
                "datetime": "2024-05-01T12:00:00Z", "parameters": draw(st.sampled_from(
                    [[], [{"id": "message", "value": "boom"}], [{"id": "n", "value": 10**30}]])),
                "instance_id": "fuzzer", "queue_name": "q", "direct_messaging_queue_name": "d", "job_types": []}
        content_type = draw(st.sampled_from([p.CONTENT_TYPE, None]))
        headers = draw(st.sampled_from([{}, {"workflow_id": WF}, {"workflow_id": 0}]))
    else:
        fields: dict[str, Any] = {
            "job_id": draw(st.sampled_from([JOB, "no-such-job"]) | json_values),
            "status": draw(st.sampled_from([STATUS, "completed", "error", "stopped", "weird"])),
            "workflow_id": draw(st.sampled_from([WF, "00000000-0000-4000-8000-000000000000", "nope", None])),
            "progression": draw(st.integers(-10, 200) | json_values),
            "datetime": "2024-05-01T12:00:00Z",
            "parameters": draw(st.sampled_from([[], [{"id": "message", "value": "boom"}]]) | json_values),
            "instance_id": "fuzzer", "queue_name": "q", "direct_messaging_queue_name": "d", "job_types": [],
        }
        if kind == "near":
            for name in draw(st.lists(st.sampled_from(_FIELD_NAMES), max_size=3)):
                fields.pop(name, None)
        body = ("nul", fields) if kind == "nul" else fields
    return queue, target, body, headers, draw(message_ids), content_type


def build(spec: tuple[Any, ...], world: World) -> MemoryDelivery:
    queue, target, body, headers, message_id, content_type = spec
    jobs = world.jobs()
    workflow_id, job_id = jobs[target % len(jobs)]
    nul = isinstance(body, tuple)
    if nul:
        body = body[1]
    if isinstance(body, dict):
        status = {p.JOB_COMPLETED: "completed", p.JOB_ERROR: "error", p.JOB_STOPPED: "stopped"}.get(queue, "error")
        body = json.dumps({k: (job_id if v == JOB else workflow_id if v == WF else status if v == STATUS else v)
                           for k, v in body.items()}).encode()
        if nul:  # a NUL where JSON allows none, or an escaped one in a string
            body = body.replace(b'"status"', b'"\\u0000status"') if target % 2 else body + b"\x00"
    headers = {k: (workflow_id if v == WF else v) for k, v in headers.items()}
    if message_id and message_id.startswith(JOB):
        message_id = job_id + message_id.removeprefix(JOB)
    return MemoryDelivery(queue=queue, body=body, message_id=message_id, headers=headers,
                          content_type=content_type)


def test_any_inbound_batch_ends_each_message_in_one_visible_place(world: World) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(drawn=st.lists(specs(), min_size=1, max_size=10))
    def prop(drawn: list[tuple[Any, ...]]) -> None:
        batch = [build(spec, world) for spec in drawn]
        broker, backend, engine = world.broker, world.backend, world.engine
        before_q, before_stats = len(broker.quarantined), {k: backend.stats[k] for k in COUNTED}
        position = engine.max_notification_id()
        for delivery in batch:
            broker.queue(delivery.queue).put(delivery)
        taken: Any = world.loop.run_until_complete(backend.broker.next_batch(len(batch) + 1, 0))
        assert sorted(d.tag for d in taken) == sorted(d.tag for d in batch)
        world.loop.run_until_complete(asyncio.wait_for(backend.handle_batch(taken), 30))
        assert not broker._unacked, "every delivery is acked or quarantined"

        quarantined = broker.quarantined[before_q:]
        assert all(isinstance(reason, str) and reason.split(": ")[0] in ("malformed", "unknown",
                                                                          "conflicting_duplicate")
                   for _, reason in quarantined), quarantined
        assert all(d.body == next(b for b in batch if b.tag == d.tag).body for d, _ in quarantined)  # kept as is
        counted = {k: backend.stats[k] - before_stats[k] for k in COUNTED}
        new = [e for _, e in engine.notifications(position, 10**6)]
        # applied: one (workflow, cause) per delivery; a message id is remembered per workflow
        applied = {(e.originator_id, e.cause) for e in new if isinstance(e, APPLIED)}
        lates = [e for e in new if isinstance(e, ev.LateAnswerReceived)]
        assert len(lates) == counted["late_answers"]
        out_tags = {d.tag for d, _ in quarantined}
        announcements = [d for d in batch if d.queue in p.WORKER_KEYS and d.tag not in out_tags]
        # each delivery in one place: the places add up to the batch, no more, no less
        assert len(batch) == len(quarantined) + sum(counted.values()) + len(applied) + len(announcements), (
            counted, len(quarantined), len(applied), len(announcements))
        records = [e for e in new if isinstance(e, ev.MessageQuarantined)]
        assert len(records) <= len(quarantined)
        for d, _ in quarantined:  # each recorded, now or by an earlier copy: one record per key and body
            stream = ev.quarantine_stream_id(f"{message_key(d)}#{body_digest(d.body)}")
            assert engine.recorder.select_events(stream, limit=1), d
        world.tally.update(sent=len(batch), quarantined=len(quarantined), applied=len(applied),
                           announcements=len(announcements), records=len(records), **counted)

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
    tally = world.tally
    assert tally["sent"] >= EXAMPLES and tally["quarantined"] > 0 and tally["records"] > 0
    assert tally["applied"] > 0 and tally["duplicates"] > 0  # the valid ones do land
    print(f"\nfuzz (in-process): {dict(tally)}")
