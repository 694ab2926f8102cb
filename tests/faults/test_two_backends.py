"""Two `stepflow serve` processes on one store and one broker (the production scale-out):
one holds the store's lease (`stepflow.adapters.lease`) and consumes responses and runs the
outbox, the other stands by. The log must be exactly once, and the standby must not consume.
SQLite file (two processes, one file: a `flock`) and a PostgreSQL schema (an advisory lock).
The lease's own fault tests (orders published once, fail-over) are in test_backend_lease.py.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import amqp_fixtures
import pytest
from amqp_fixtures import Procs, Rabbit, sqlite_store
from fault_kit import FAULT_WORKERS, audit, figures, pipeline, ready, scaled, wait_all_final
from fault_workers import FAULT_TYPES

from stepflow.adapters.persistence import open_engine

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.rabbitmq]
rabbit, procs_factory, postgres_store = amqp_fixtures.rabbit, amqp_fixtures.procs_factory, amqp_fixtures.postgres_store

WORKFLOWS = 40  # x10 with --soak


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_store"))
    return sqlite_store(tmp_path)


def test_two_backends_on_one_store_complete_the_run_exactly_once(
        rabbit: Rabbit, store: str, procs_factory: Callable[[str], Procs]) -> None:
    rng = random.Random()
    rabbit.job_types.update(FAULT_TYPES)
    procs = procs_factory(store)
    engine = open_engine(store)
    try:
        first, second = procs.serve("serve-a"), procs.serve("serve-b")
        procs.worker("w1", FAULT_WORKERS)
        procs.worker("w2", FAULT_WORKERS)
        ready(rabbit, procs, job_completed=1, fault_a=2, fault_b=2)  # one consumer: the lease holder
        workflow_ids: list[uuid.UUID] = []
        started = time.monotonic()
        for n in range(scaled(WORKFLOWS)):
            workflow_ids.append(engine.start_workflow(pipeline(rng.randint(2, 5)), {"name": f"wf{n}"}))
        wait_all_final(engine, workflow_ids, 240, procs.logs)
        elapsed = time.monotonic() - started
        result = audit(engine, workflow_ids)
        logs = first.log() + second.log()
        figures(f"two backends {store.split(':')[0]}", workflows=result.workflows, jobs=result.jobs,
                jobs_lost=result.jobs_lost, transitions_doubled=result.doubled,
                conflict_retries=logs.count("execute_conflict_retry"), seconds=round(elapsed, 1))
        result.check()
        assert first.alive() and second.alive(), procs.logs()
        assert "backend_failed" not in logs and "Traceback" not in logs, procs.logs()
        assert first.terminate() == 0 and second.terminate() == 0
    finally:
        engine.close()


def test_a_backend_with_a_stale_cache_does_not_reject_a_good_response(tmp_path: Path) -> None:
    """Regression: backend B cached a workflow; backend A advanced it (submitting the next
    job); B then gets that job's completion. B's cache knows no such job, and a rejection
    writes nothing, so no version check caught it: B quarantined a good response and the
    workflow hung. Now a rejection by a cached aggregate that is behind the store reruns the
    batch from the store."""
    from fault_kit import pipeline as _pipeline

    from stepflow.engine import commands as cmd

    store = sqlite_store(tmp_path)
    a, b = open_engine(store), open_engine(store)
    try:
        workflow_id = a.start_workflow(_pipeline(2), {"name": "x"})
        (first,) = a.workflow_state(workflow_id).jobs
        b.load(workflow_id)  # cached in B, at the first version
        (outcome,) = a.execute([cmd.RecordCompleted(workflow_id=workflow_id, job_id=first, cause="c1")])
        assert not outcome.rejected
        fan = [j for j in a.workflow_state(workflow_id).jobs if j != first]
        (outcome,) = b.execute([cmd.RecordCompleted(workflow_id=workflow_id, job_id=fan[0], cause="c2")])
        assert not outcome.rejected, outcome.rejected
        # and a real rejection is still one (from the store, not stale)
        (outcome,) = b.execute([cmd.RecordCompleted(workflow_id=workflow_id, job_id="nope", cause="c3")])
        assert outcome.rejected and "has no job" in outcome.rejected
    finally:
        a.close()
        b.close()
