"""No single message can stop `stepflow serve` (a real process on the real RabbitMQ).

- The nested-object pill (`{"a":` x 1,500: msgspec recurses until RecursionError) is
  quarantined with its reason within moments, the backend keeps running, and a restarted
  backend has nothing left to choke on.
- The crash-loop breaker: a message that kills the backend whenever it is applied (the
  `poison_message` crash point, standing for a bug we have not found yet) kills it once in its
  batch, then twice when applied alone; the next backend quarantines it and stays up, and the
  other workflows complete.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import amqp_fixtures
import pytest
from amqp_fixtures import Procs, Rabbit, one_step, sqlite_store, wait_until
from fault_kit import FAULT_WORKERS, figures, pipeline, ready, wait_all_final
from fault_workers import FAULT_TYPES

from stepflow.adapters import protocol as p
from stepflow.adapters.inbox_batch import SUSPECT_ATTEMPTS
from stepflow.adapters.persistence import open_engine
from stepflow.engine import events as ev

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.rabbitmq]
rabbit, procs_factory = amqp_fixtures.rabbit, amqp_fixtures.procs_factory

PILL = b'{"a":' * 1500


def quarantined(engine: object) -> list[ev.MessageQuarantined]:
    return [e for _, e in engine.notifications(0, 1000, topics=("MessageQuarantined",))]  # type: ignore[attr-defined]


def test_the_nested_object_pill_is_quarantined_and_the_backend_stays_up(
        rabbit: Rabbit, tmp_path: Path, procs_factory: Callable[[str], Procs]) -> None:
    rabbit.job_types.update(FAULT_TYPES)
    store = sqlite_store(tmp_path)
    procs = procs_factory(store)
    engine = open_engine(store)
    try:
        serve = procs.serve()
        procs.worker("w1", FAULT_WORKERS)
        ready(rabbit, procs, job_completed=1, fault_a=1, fault_b=1)
        sent = time.monotonic()
        asyncio.run(rabbit.publish(p.JOB_RESPONSE, p.JOB_COMPLETED, PILL, message_id="pill-1",
                                   content_type=p.CONTENT_TYPE))
        asyncio.run(rabbit.wait_depth(p.QUARANTINE, messages=1, timeout=10))
        took = time.monotonic() - sent
        (record,) = quarantined(engine)
        assert record.kind == "malformed" and record.message_id == "pill-1", record
        assert serve.alive(), procs.logs()
        # a restarted backend finds nothing left to choke on, and real work goes on
        assert serve.terminate() == 0
        again = procs.serve("serve-again")
        workflow_id = engine.start_workflow(pipeline(2), {"name": "after the pill"})
        wait_all_final(engine, [workflow_id], 60, procs.logs)
        assert engine.workflow_state(workflow_id).status == "completed"
        assert again.alive() and asyncio.run(rabbit.depth(p.JOB_COMPLETED))[0] == 0
        figures("poison pill", quarantined_after_s=round(took, 2))
        assert took < 5, f"quarantined after {took:.1f} s"
    finally:
        engine.close()


def test_a_message_that_kills_the_backend_is_quarantined_by_the_crash_loop_breaker(
        rabbit: Rabbit, tmp_path: Path, procs_factory: Callable[[str], Procs]) -> None:
    rabbit.job_types.update(FAULT_TYPES)
    asyncio.run(rabbit.declare("poison_target"))  # a queue nobody consumes: the job stays open
    store = sqlite_store(tmp_path)
    procs = procs_factory(store)
    engine = open_engine(store)
    deadly = {"STEPFLOW_FAULT": "poison_message", "STEPFLOW_FAULT_MESSAGE": "killer-1"}
    try:
        serve = procs.serve("serve-0", **deadly)
        procs.worker("w1", FAULT_WORKERS)
        ready(rabbit, procs, job_completed=1, fault_a=1, fault_b=1)
        target = engine.start_workflow(one_step("poison_target"))
        wait_until(lambda: engine.workflow_state(target).jobs, what="the target job")
        (job_id,) = engine.workflow_state(target).jobs
        body = p.encoder.encode(p.JobResult(job_id=job_id, status="completed"))
        asyncio.run(rabbit.publish(p.JOB_RESPONSE, p.JOB_COMPLETED, body, message_id="killer-1",
                                   content_type=p.CONTENT_TYPE, headers={"workflow_id": str(target)}))
        deaths = 0
        while True:
            wait_until(lambda life=serve: not life.alive() or asyncio.run(rabbit.depth(p.QUARANTINE))[0] == 1,
                       timeout=60, what="the backend dies or quarantines the killer")
            if serve.alive():
                break
            assert serve.wait(5) == 137 and "fault_injected" in serve.log(), procs.logs()
            deaths += 1
            assert deaths <= 1 + SUSPECT_ATTEMPTS, f"crash loop: {deaths} deaths\n{procs.logs()}"
            serve = procs.serve(f"serve-{deaths}", **deadly)
        assert deaths == 1 + SUSPECT_ATTEMPTS  # once in its batch, then each time alone
        (record,) = quarantined(engine)
        assert record.kind == "poison" and record.message_id == "killer-1"
        assert f"died {SUSPECT_ATTEMPTS} times" in record.reason
        assert engine.workflow_state(target).jobs[job_id].status == "queued"  # never applied
        survivors = [engine.start_workflow(pipeline(2), {"name": f"s{i}"}) for i in range(3)]
        wait_all_final(engine, survivors, 60, procs.logs)
        assert {engine.workflow_state(w).status for w in survivors} == {"completed"}
        assert serve.alive(), procs.logs()
        figures("crash-loop breaker", deaths_before_quarantine=deaths)
    finally:
        engine.close()
