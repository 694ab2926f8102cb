"""Worker faults over real processes: workers SIGKILLed mid-job (the broker redelivers, the
log stays exactly once), a job that hangs past its timeout without progression (JobTimedOut,
retried per policy), and a worker that dies holding a job and never comes back (the job's
timeout fires and the retry runs elsewhere: no stuck workflow)."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import amqp_fixtures
import pytest
from amqp_fixtures import Procs, Rabbit, event_counts, journal_lines, sqlite_store, wait_until
from fault_kit import FAULT_WORKERS, audit, figures, pipeline, ready, scaled, wait_all_final
from fault_workers import FAULT_TYPES

from stepflow.adapters.persistence import open_engine
from stepflow.engine.definitions import build_definition

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.rabbitmq]
rabbit, procs_factory = amqp_fixtures.rabbit, amqp_fixtures.procs_factory


def hanging(journal: Path, timeout_s: float = 2.0) -> object:
    return build_definition({"identifier": "fault-hang", "steps": [{
        "id": "hang", "job_type": "fault_hang", "timeout_s": timeout_s,
        "retry": {"max_attempts": 2, "backoff_s": 0.1},
        "parameters": {"hang": True, "journal": str(journal)}}]})


def test_workers_killed_mid_job_lose_nothing(rabbit: Rabbit, tmp_path: Path,
                                             procs_factory: Callable[[str], Procs]) -> None:
    rng = random.Random()
    rabbit.job_types.update(FAULT_TYPES)
    store = sqlite_store(tmp_path)
    procs = procs_factory(store)
    engine = open_engine(store)
    try:
        procs.serve()
        workers = [procs.worker("w", FAULT_WORKERS), procs.worker("w", FAULT_WORKERS)]
        ready(rabbit, procs, job_completed=1, fault_a=2, fault_b=2)
        ids: list[uuid.UUID] = []
        kills = scaled(3)
        for _ in range(kills):
            ids += [engine.start_workflow(pipeline(rng.randint(2, 5)), {"name": "k"}) for _ in range(8)]
            time.sleep(rng.uniform(0.05, 0.6))  # random timing of the kill, not an assertion
            victim = workers.pop(rng.randrange(len(workers)))
            assert victim.kill() == -9
            workers.append(procs.worker("w", FAULT_WORKERS))
        wait_all_final(engine, ids, 120, procs.logs)
        result = audit(engine, ids)
        figures("workers killed mid-job", kills_survived=kills, workflows=result.workflows, jobs=result.jobs,
                jobs_lost=result.jobs_lost, transitions_doubled=result.doubled)
        result.check()
    finally:
        engine.close()


def test_a_job_past_its_timeout_without_progression_is_retried(
        rabbit: Rabbit, tmp_path: Path, procs_factory: Callable[[str], Procs]) -> None:
    rabbit.job_types.update(FAULT_TYPES)
    store = sqlite_store(tmp_path)
    procs = procs_factory(store)
    engine = open_engine(store)
    try:
        procs.serve()
        procs.worker("w", FAULT_WORKERS)
        ready(rabbit, procs, job_completed=1, fault_hang=1)
        journal = tmp_path / "journal"
        workflow_id = engine.start_workflow(hanging(journal))  # type: ignore[arg-type]
        wait_all_final(engine, [workflow_id], 60, procs.logs)
        state = engine.workflow_state(workflow_id)
        assert state.status == "completed"
        counts = event_counts(engine, workflow_id)
        assert counts["JobTimedOut"] == 1 and counts["JobSubmitted"] == 2 and counts["JobCompleted"] == 1
        assert [line[2] for line in journal_lines(journal)] == ["1", "2"]  # attempts
        audit(engine, [workflow_id]).check()
    finally:
        engine.close()


def test_a_worker_that_dies_holding_a_job_and_never_returns_leads_to_the_timeout_not_a_stuck_workflow(
        rabbit: Rabbit, tmp_path: Path, procs_factory: Callable[[str], Procs]) -> None:
    rabbit.job_types.update(FAULT_TYPES)
    store = sqlite_store(tmp_path)
    procs = procs_factory(store)
    engine = open_engine(store)
    try:
        procs.serve()
        doomed = procs.worker("doomed", FAULT_WORKERS, "fault_hang")
        ready(rabbit, procs, job_completed=1, fault_hang=1)
        journal = tmp_path / "journal"
        workflow_id = engine.start_workflow(hanging(journal, timeout_s=3.0))  # type: ignore[arg-type]
        wait_until(lambda: journal_lines(journal), 30, "the doomed worker to take the job", procs.logs)
        assert doomed.kill() == -9  # never comes back
        other = procs.worker("other", FAULT_WORKERS, "fault_hang")
        wait_all_final(engine, [workflow_id], 60, procs.logs)
        state = engine.workflow_state(workflow_id)
        assert state.status == "completed", procs.logs()
        counts = event_counts(engine, workflow_id)
        assert counts["JobTimedOut"] == 1 and counts["JobCompleted"] == 1
        (done,) = [j for j in state.jobs.values() if j.status == "completed"]
        assert done.worker == other.instance_id and done.attempt == 2
        audit(engine, [workflow_id]).check()
    finally:
        engine.close()
