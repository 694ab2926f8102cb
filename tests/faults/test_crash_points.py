"""Crash points: the backend (`stepflow serve`, a real process on the real RabbitMQ) dies at
each named point of docs/protocol.md "Crash points", many times, at a random visit
(STEPFLOW_FAULT_AFTER), and also by a plain SIGKILL at a random moment. Workers keep running.
After the last restart every workflow completes, and the event log shows each job submitted
once and ended once, each step completed once, each workflow completed once, versions
contiguous: nothing lost, nothing doubled.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import amqp_fixtures
import pytest
from amqp_fixtures import Procs, Rabbit, sqlite_store
from fault_kit import (
    FAULT_WORKERS,
    all_final,
    audit,
    figures,
    pipeline,
    ready,
    scaled,
    wait_all_final,
)
from fault_workers import FAULT_TYPES

from stepflow.adapters import protocol as p
from stepflow.adapters.persistence import open_engine

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.rabbitmq]
rabbit, procs_factory = amqp_fixtures.rabbit, amqp_fixtures.procs_factory

POINTS = ["after_store_before_ack", "mid_batch", "after_store_before_publish", "during_publish",
          "after_publish_before_advance", "sigkill"]
KILLS = 4  # per point in CI; x10 with --soak


@pytest.mark.parametrize("point", POINTS)
def test_backend_killed_at_a_crash_point_loses_nothing_and_doubles_nothing(
        rabbit: Rabbit, tmp_path: Path, procs_factory: Callable[[str], Procs], point: str) -> None:
    seed = int(os.environ.get("STEPFLOW_FAULT_SEED") or time.time_ns() % 100_000)
    rng = random.Random(seed)
    rabbit.job_types.update(FAULT_TYPES)
    store = sqlite_store(tmp_path)
    procs = procs_factory(store)
    engine = open_engine(store)
    try:
        procs.worker("w1", FAULT_WORKERS)
        procs.worker("w2", FAULT_WORKERS)
        ready(rabbit, procs, fault_a=2, fault_b=2)
        workflow_ids: list[uuid.UUID] = []

        def start(n: int) -> None:
            for _ in range(n):
                workflow_ids.append(engine.start_workflow(pipeline(rng.randint(2, 4)),
                                                          {"name": f"wf{len(workflow_ids)}"}))

        kills = scaled(KILLS)
        context = lambda: f"seed={seed}\n{procs.logs()}"
        for round_ in range(kills):
            if point == "sigkill":
                serve = procs.serve(f"serve-{round_}")
                start(rng.randint(2, 5))
                # random timing: anywhere from mid-start-up to the thick of the run
                time.sleep(rng.uniform(0.2, 2.5))
                assert serve.kill() == -9
                continue
            after = rng.randint(1, 3)
            serve = procs.serve(f"serve-{round_}", STEPFLOW_FAULT=point, STEPFLOW_FAULT_AFTER=str(after))
            start(rng.randint(2, 5))
            deadline = time.monotonic() + 90
            while serve.alive():
                if time.monotonic() > deadline:
                    raise AssertionError(f"{point} (after {after}) never reached\n{context()}")
                if all_final(engine, workflow_ids):
                    start(2)  # keep work flowing until the point is reached `after` times
                time.sleep(0.2)
            assert serve.wait(5) == 137, f"serve exited {serve.wait(5)}, not at {point}\n{context()}"
            assert "fault_injected" in serve.log()

        procs.serve("final")
        wait_all_final(engine, workflow_ids, 120, context)
        result = audit(engine, workflow_ids)
        quarantined = asyncio.run(rabbit.depth(p.QUARANTINE))[0]
        figures(f"crash {point}", kills_survived=kills, workflows=result.workflows, jobs=result.jobs,
                jobs_lost=result.jobs_lost, transitions_doubled=result.doubled, seed=seed)
        result.check()
        assert result.jobs_completed == result.jobs
        assert quarantined == 0, f"{quarantined} messages quarantined during crash recovery\n{context()}"
    finally:
        engine.close()
