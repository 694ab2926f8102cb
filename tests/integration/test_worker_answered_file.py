"""A `stepflow worker --answered-file` that is killed and started again answers an order it
already answered from the file: the job does not run twice (issue #13: with several
backends handing over, an order can come back after its worker restarted).

The test is the backend: it publishes the same order twice and reads the answers.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import amqp_fixtures
import pytest
from amqp_fixtures import ROOT, Procs, Rabbit, journal_lines, slow_sleep, wait_until
from test_worker_reconnect import Answers, publish_order

from stepflow.adapters import protocol as p
from stepflow.sdk import Worker

pytestmark = [pytest.mark.integration, pytest.mark.rabbitmq, pytest.mark.e2e]
rabbit, procs_factory = amqp_fixtures.rabbit, amqp_fixtures.procs_factory  # the fixtures

remembering = Worker("remembering", version="1.0.0", heartbeat_s=1.0)
remembering.job("slow_sleep")(slow_sleep)


def start(rabbit: Rabbit, procs: Procs, name: str, answered: Path | None) -> amqp_fixtures.Proc:
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests"), str(Path(__file__).parent)])
    extra = ["--answered-file", str(answered)] if answered is not None else []
    proc = procs.worker(name, f"{Path(__file__).resolve()}:remembering", extra_args=extra, PYTHONPATH=path)
    asyncio.run(rabbit.wait_depth("slow_sleep", consumers=1))  # it declared the topology and consumes
    return proc


def starts(journal: Path, job_id: str) -> int:
    return sum(1 for line in journal_lines(journal) if line[:2] == ["start", job_id])


@pytest.mark.parametrize("remember", [True, False], ids=["with-file", "memory-only"])
def test_a_restarted_worker_answers_a_known_order_from_its_file(
        remember: bool, rabbit: Rabbit, tmp_path: Path, procs_factory: Callable[[str], Procs]) -> None:
    rabbit.job_types.add("slow_sleep")
    procs = procs_factory("memory://")
    answered = tmp_path / "answered.jsonl" if remember else None
    journal, job_id = tmp_path / "journal", "job-remembered-1"
    completed = Answers(rabbit, p.JOB_COMPLETED)

    first = start(rabbit, procs, "w1", answered)
    publish_order(rabbit, "slow_sleep", job_id, journal=str(journal))
    wait_until(lambda: f"{job_id}:completed" in completed.ids(), 30, "the first answer", context=procs.logs)
    first.kill()  # no clean shutdown: only what was flushed counts

    second = start(rabbit, procs, "w2", answered)
    publish_order(rabbit, "slow_sleep", job_id, journal=str(journal))  # the same job, again
    wait_until(lambda: len([m for m in completed.take() if m.message_id == f"{job_id}:completed"]) == 2, 30,
               "the second answer", context=procs.logs)
    if remember:
        assert starts(journal, job_id) == 1, journal_lines(journal)
        assert "order_already_answered" in second.log()
    else:  # the control: without the file a restarted worker runs the job again
        assert starts(journal, job_id) == 2, journal_lines(journal)
