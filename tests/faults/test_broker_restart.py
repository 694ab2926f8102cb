"""RabbitMQ restarted (`rabbitmqctl stop_app` / `start_app`) in the middle of a run of 200
workflows: the backend and the workers reconnect (robust connections), re-declare, resume
consuming, and the run completes exactly once. The broker is shared with other tests: it is
always started again (finally) and awaited before the test goes on; one restart only."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import amqp_fixtures
import pytest
from amqp_fixtures import Procs, Rabbit, sqlite_store, wait_until
from fault_kit import FAULT_WORKERS, audit, figures, pipeline, ready, scaled, wait_all_final
from fault_workers import FAULT_TYPES

from stepflow.adapters.persistence import open_engine

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.rabbitmq]
rabbit, procs_factory = amqp_fixtures.rabbit, amqp_fixtures.procs_factory

WORKFLOWS = 200


def rabbitmqctl(*args: str, timeout: float = 120) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=timeout)


def completed(engine: object) -> int:
    return len(engine.notifications(0, 100_000, topics=("WorkflowCompleted",)))  # type: ignore[attr-defined]


def test_a_broker_restart_mid_run_loses_nothing(rabbit: Rabbit, tmp_path: Path,
                                                procs_factory: Callable[[str], Procs]) -> None:
    rabbit.job_types.update(FAULT_TYPES)
    store = sqlite_store(tmp_path)
    procs = procs_factory(store)
    engine = open_engine(store)
    try:
        serve = procs.serve()
        workers = [procs.worker("w1", FAULT_WORKERS), procs.worker("w2", FAULT_WORKERS)]
        ready(rabbit, procs, job_completed=1, fault_a=2, fault_b=2)
        total = scaled(WORKFLOWS)
        slow = pipeline(2, jitter=0.15)  # jobs of ~75 ms: the run lasts long enough to be cut
        ids: list[uuid.UUID] = [engine.start_workflow(slow, {"name": f"r{n}"}) for n in range(total // 2)]
        wait_until(lambda: completed(engine) >= 5, 60, "the run to get going", procs.logs)
        try:
            rabbitmqctl("stop_app")
            down_at = time.monotonic()
            # while the broker is away, more workflows are stored (their orders wait in the log)
            ids += [engine.start_workflow(slow, {"name": f"r{n}"}) for n in range(total // 2, total)]
            done_while_down = completed(engine)
        finally:
            rabbitmqctl("start_app")
            rabbitmqctl("await_startup")
        down_s = time.monotonic() - down_at
        ready(rabbit, procs, timeout=60, job_completed=1, fault_a=2, fault_b=2)  # consumers are back
        wait_all_final(engine, ids, 240, procs.logs)
        result = audit(engine, ids)
        figures("broker restart", workflows=result.workflows, completed_before_restart=done_while_down,
                jobs=result.jobs, jobs_lost=result.jobs_lost, transitions_doubled=result.doubled,
                broker_down_s=round(down_s, 1))
        result.check()
        assert serve.alive() and all(w.alive() for w in workers), procs.logs()
        assert done_while_down < total
        asyncio.run(rabbit.wait_depth("fault_a", messages=0, timeout=30))
    finally:
        engine.close()
