"""Every inbound message ends in exactly one visible place, whatever it contains.

Over the in-process broker and a real Backend: applied; counted as a duplicate or a late
progress; recorded as a `LateAnswerReceived`; or quarantined (queue + `MessageQuarantined`)
with its kind: malformed, unknown, conflicting_duplicate, poison. Nothing is dropped silently
and nothing stops the backend.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from amqp_fixtures import eventually

from stepflow.adapters import protocol as p
from stepflow.adapters.backend import Backend, default_backend
from stepflow.adapters.embedded import EmbeddedRuntime
from stepflow.adapters.inbox import translate
from stepflow.adapters.inbox_batch import SUSPECT_ATTEMPTS
from stepflow.adapters.memory.broker import MemoryBroker, MemoryDelivery
from stepflow.engine import commands as cmd
from stepflow.engine import events as ev
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.definitions import build_definition
from stepflow.sdk import JobContext, Worker

POISON_JOB_OUTPUT = "explode"


class BuggyEngine(WorkflowEngine):
    """An engine with a bug we have not found yet: applying one particular completion raises."""

    def _run(self, command: cmd.Command, touched: Any, loaded: Any) -> cmd.Outcome:
        if isinstance(command, cmd.RecordCompleted) and command.outputs.get("out") == POISON_JOB_OUTPUT:
            raise KeyError("a bug in the engine")
        return super()._run(command, touched, loaded)


def one_step(n: int = 1) -> Any:
    return build_definition({"identifier": "t", "parameters": [{"id": "items", "type": "array_of_strings",
                                                                 "default": [str(i) for i in range(n)]}],
                             "steps": [{"id": "only", "job_type": "nobody", "fan_out": "{workflow.items}"}]})


class World:
    def __init__(self, engine: WorkflowEngine, broker: MemoryBroker, backend: Backend) -> None:
        self.engine, self.broker, self.backend = engine, broker, backend

    async def deliver(self, queue: str, body: bytes | Any, message_id: str | None, *,
                      workflow_id: uuid.UUID | None = None, redelivered: bool = False) -> None:
        raw = body if isinstance(body, bytes) else p.encoder.encode(body)
        headers = {"workflow_id": str(workflow_id)} if workflow_id else {}
        self.broker.queue(queue).put(MemoryDelivery(queue=queue, body=raw, message_id=message_id,
                                                    headers=headers, redelivered=redelivered))
        await self.broker._notify()
        await eventually(lambda: not len(self.broker.queue(queue)) and not self.broker._unacked,
                         what=f"the backend to settle the {queue} message (ack, quarantine)")

    def quarantined(self) -> list[ev.MessageQuarantined]:
        return [e for _, e in self.engine.notifications(0, 10_000, topics=("MessageQuarantined",))]  # type: ignore[misc]

    def jobs(self, workflow_id: uuid.UUID) -> list[str]:
        return list(self.engine.workflow_state(workflow_id).jobs)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    engine = BuggyEngine(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    broker = MemoryBroker()
    broker.bindings["nobody"] = "nobody"  # a job queue that no worker consumes: orders wait there
    backend = default_backend(engine, broker.backend(), outbox_poll_s=0.05, timeout_check_s=0.05)
    await backend.start()
    try:
        yield World(engine, broker, backend)
    finally:
        await backend.stop()


def digest_of(result: p.JobResult, message_id: str, workflow_id: uuid.UUID) -> str | None:
    delivery = MemoryDelivery(queue=p.JOB_COMPLETED, body=p.encoder.encode(result), message_id=message_id,
                              headers={"workflow_id": str(workflow_id)})
    command = translate(delivery)
    assert isinstance(command, cmd.Command)
    return command.digest


def completed(job_id: str, out: str = "ok") -> p.JobResult:
    return p.JobResult(job_id=job_id, status="completed", parameters=[p.Parameter(id="out", value=out)])


async def test_an_object_nested_1500_deep_is_quarantined_and_the_backend_keeps_going(world: World) -> None:
    pill = b'{"a":' * 1500
    await world.deliver(p.JOB_COMPLETED, pill, "pill-1")
    (record,) = world.quarantined()
    assert record.kind == "malformed" and record.body_size == len(pill)
    assert [why.split(":")[0] for _, why in world.broker.quarantined] == ["malformed"]
    workflow_id = await world.backend.start_workflow(one_step())
    (job_id,) = world.jobs(workflow_id)
    await world.deliver(p.JOB_COMPLETED, completed(job_id), "good-1", workflow_id=workflow_id)
    assert world.engine.workflow_state(workflow_id).status == "completed"


async def test_an_applied_id_with_another_body_is_a_conflicting_duplicate_with_both_digests(world: World) -> None:
    workflow_id = await world.backend.start_workflow(one_step(2))
    first, second = world.jobs(workflow_id)
    applied, clash = completed(first, "a"), completed(first, "b")
    await world.deliver(p.JOB_COMPLETED, applied, "m-1", workflow_id=workflow_id)
    await world.deliver(p.JOB_COMPLETED, applied, "m-1", workflow_id=workflow_id)  # a redelivery
    await world.deliver(p.JOB_COMPLETED, clash, "m-1", workflow_id=workflow_id)
    assert world.backend.stats["duplicates"] == 1
    (record,) = world.quarantined()
    assert record.kind == "conflicting_duplicate" and record.message_id == "m-1"
    assert record.applied_digest == digest_of(applied, "m-1", workflow_id)
    assert record.digest == digest_of(clash, "m-1", workflow_id)
    # the same answer re-run by another worker (other timings, same content) is no clash
    rerun = p.JobResult(job_id=first, status="completed", parameters=applied.parameters,
                        execution_duration=9.5, instance_id="another-worker")
    await world.deliver(p.JOB_COMPLETED, rerun, "m-1", workflow_id=workflow_id)
    assert world.backend.stats["duplicates"] == 2 and len(world.quarantined()) == 1
    assert world.engine.workflow_state(workflow_id).jobs[first].outputs == {"out": "a"}
    assert world.engine.workflow_state(workflow_id).jobs[second].status == "queued"


async def test_unknown_workflow_and_unknown_job_are_quarantined_as_unknown(world: World) -> None:
    workflow_id = await world.backend.start_workflow(one_step())
    await world.deliver(p.JOB_COMPLETED, completed("no-such-job"), "u-1", workflow_id=workflow_id)
    await world.deliver(p.JOB_COMPLETED, completed("j"), "u-2", workflow_id=uuid.uuid4())
    assert [(r.message_id, r.kind) for r in world.quarantined()] == [("u-1", "unknown"), ("u-2", "unknown")]


async def test_late_answers_are_recorded_and_late_progress_is_counted(world: World) -> None:
    workflow_id = await world.backend.start_workflow(one_step())
    (job_id,) = world.jobs(workflow_id)
    await world.backend.command(cmd.StopWorkflow(workflow_id=workflow_id, reason="enough", actor="ops"))
    await world.deliver(p.JOB_COMPLETED, completed(job_id, "worth keeping"), "late-1", workflow_id=workflow_id)
    progress = p.JobProgression(job_id=job_id, progression=100)
    await world.deliver(p.JOB_PROGRESSION, progress, "late-2", workflow_id=workflow_id)
    (late,) = [e for e in world.engine.history(workflow_id) if isinstance(e, ev.LateAnswerReceived)]
    assert (late.answer, late.job_status, late.outputs) == ("completed", "stopped", {"out": "worth keeping"})
    assert (world.backend.stats["late_answers"], world.backend.stats["late_progress"]) == (1, 1)
    assert world.quarantined() == []


async def test_a_message_that_raises_while_applied_is_quarantined_alone_as_poison(world: World) -> None:
    workflow_id = await world.backend.start_workflow(one_step(3))
    jobs = world.jobs(workflow_id)
    backend = world.backend
    batch = [MemoryDelivery(queue=p.JOB_COMPLETED, headers={"workflow_id": str(workflow_id)},
                            body=p.encoder.encode(completed(job, POISON_JOB_OUTPUT if i == 1 else "ok")),
                            message_id=f"b-{i}") for i, job in enumerate(jobs)]
    for delivery in batch:
        world.broker.queue(p.JOB_COMPLETED).put(delivery)
    await world.deliver(p.JOB_COMPLETED, completed(jobs[0]), "b-0", workflow_id=workflow_id)
    (record,) = world.quarantined()
    assert record.kind == "poison" and record.message_id == "b-1" and "KeyError" in record.reason
    statuses = {j.job_id: j.status for j in world.engine.workflow_state(workflow_id).jobs.values()}
    assert [statuses[j] for j in jobs] == ["completed", "queued", "completed"]
    assert backend.check() is None  # no loop died


async def test_a_redelivered_message_that_killed_the_backend_twice_alone_is_quarantined(world: World) -> None:
    workflow_id = await world.backend.start_workflow(one_step(2))
    first, second = world.jobs(workflow_id)
    body = p.encoder.encode(completed(first))
    key = "killer-1"
    for _ in range(SUSPECT_ATTEMPTS):  # two earlier lives each died applying it alone
        world.engine.suspect(key, key, p.JOB_COMPLETED)
    await world.deliver(p.JOB_COMPLETED, body, key, workflow_id=workflow_id, redelivered=True)
    (record,) = world.quarantined()
    assert record.kind == "poison" and f"died {SUSPECT_ATTEMPTS} times" in record.reason
    # an innocent redelivery is applied alone, and its clean finish clears it
    await world.deliver(p.JOB_COMPLETED, completed(second), "innocent", workflow_id=workflow_id, redelivered=True)
    assert world.engine.workflow_state(workflow_id).jobs[second].status == "completed"
    assert world.engine.suspect("innocent", "innocent", p.JOB_COMPLETED)[0] == 0


async def test_an_applied_message_is_a_duplicate_whatever_deaths_came_with_it(world: World) -> None:
    """Backends that die at start-up for another reason while a redelivered answer is applied
    must not get the answer quarantined: applied already, it changes nothing, so it killed
    nobody. One life may look; a death while looking makes it poison after all."""
    workflow_id = await world.backend.start_workflow(one_step(2))
    first, second = world.jobs(workflow_id)
    await world.deliver(p.JOB_COMPLETED, completed(first), "applied-1", workflow_id=workflow_id)
    for _ in range(SUSPECT_ATTEMPTS):  # two lives died (elsewhere) while it was applied alone
        world.engine.suspect("applied-1", "applied-1", p.JOB_COMPLETED)
    duplicates = world.backend.stats["duplicates"]
    await world.deliver(p.JOB_COMPLETED, completed(first), "applied-1", workflow_id=workflow_id, redelivered=True)
    assert world.quarantined() == []
    assert world.backend.stats["duplicates"] == duplicates + 1
    assert world.engine.suspect("applied-1", "applied-1", p.JOB_COMPLETED)[0] == 0  # cleared
    # the life that looked died too: then it is poison, applied or not
    await world.deliver(p.JOB_COMPLETED, completed(second), "applied-2", workflow_id=workflow_id)
    for _ in range(SUSPECT_ATTEMPTS + 1):
        world.engine.suspect("applied-2", "applied-2", p.JOB_COMPLETED)
    await world.deliver(p.JOB_COMPLETED, completed(second), "applied-2", workflow_id=workflow_id, redelivered=True)
    (record,) = world.quarantined()
    assert record.kind == "poison" and record.message_id == "applied-2"


async def test_a_timed_out_job_is_stopped_at_the_worker() -> None:
    engine = WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    started, cancelled = asyncio.Event(), asyncio.Event()
    worker = Worker("sleepy", heartbeat_s=60)

    @worker.job("sleepy")
    async def sleepy(params: dict, ctx: JobContext) -> dict:
        started.set()
        try:
            await asyncio.Event().wait()  # never answers, never reports progress
        finally:
            cancelled.set()
        return {}

    definition = build_definition({"identifier": "t", "steps": [
        {"id": "only", "job_type": "sleepy", "timeout_s": 0.3, "retry": {"max_attempts": 1}}]})
    async with EmbeddedRuntime(engine, [worker]) as runtime:
        workflow_id = await runtime.start(definition)
        await asyncio.wait_for(started.wait(), 5)
        await asyncio.wait_for(cancelled.wait(), 10)  # the stop order reached the handler
        state = await runtime.wait(workflow_id, timeout=10)
    assert state.status == "error"
    assert [e.job_id for e in engine.history(workflow_id) if isinstance(e, ev.JobTimedOut)] == list(state.jobs)


def test_audit_kind_lists_quarantined_messages_and_late_answers(tmp_path: Any, capsys: Any) -> None:
    from stepflow.adapters.cli import main

    store = f"sqlite:///{tmp_path / 'store.sqlite'}"
    engine = WorkflowEngine(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                                 "SQLITE_DBNAME": str(tmp_path / "store.sqlite")})
    workflow_id = engine.start_workflow(one_step())
    (job_id,) = engine.workflow_state(workflow_id).jobs
    engine.command(cmd.StopWorkflow(workflow_id=workflow_id, actor="ops"))
    engine.execute([cmd.RecordCompleted(workflow_id=workflow_id, job_id=job_id, cause="late-1", outputs={"o": 1})])
    engine.record_quarantined([cmd.Quarantine(key="k1", queue=p.JOB_COMPLETED, kind="conflicting_duplicate",
                                              reason="message id m was applied with another body",
                                              message_id="m", body=b"{}")])
    engine.close()
    capsys.readouterr()
    assert main(["audit", "--kind", "quarantine", "--store", store]) == 0
    out = capsys.readouterr().out
    assert "conflicting_duplicate on job_completed: message id m was applied" in out and "Late" not in out
    assert main(["audit", "--kind", "late", "--store", store, "--json"]) == 0
    (late,) = [line for line in capsys.readouterr().out.splitlines() if line]
    assert '"answer":"completed"' in late and '"cause":"late-1"' in late and '"o":1' in late
