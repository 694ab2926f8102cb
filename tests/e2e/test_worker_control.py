"""`stepflow worker-control` against a real `stepflow worker` process on RabbitMQ: status is
answered, pause stops it taking orders (an order waits on its queue), resume makes it take
them again, stop makes the process exit; every order is in the store's audit log."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import amqp_fixtures
import pytest
from amqp_fixtures import MEDIA_WORKERS, ROOT, Procs, Rabbit, sqlite_store

from stepflow.adapters import protocol as p

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.rabbitmq]
rabbit, procs_factory = amqp_fixtures.rabbit, amqp_fixtures.procs_factory  # the fixtures


def control(rabbit: Rabbit, store: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stepflow", "worker-control", *args, "--store", store,
                           "--actor", "oncall"], env=rabbit.env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)


def probe_order() -> bytes:
    order = p.JobOrder(job_id=str(uuid.uuid4()), workflow_id=str(uuid.uuid4()),
                       parameters=p.to_parameters({"source": "a.mov", "size_kib": 1}))
    return p.encoder.encode(order)


def test_status_pause_resume_stop_a_worker_process(rabbit: Rabbit, procs_factory: Callable[[str], Procs],
                                                    tmp_path: Path) -> None:
    store = sqlite_store(tmp_path)
    procs = procs_factory(store)
    worker = procs.worker("media", MEDIA_WORKERS, "media_probe")
    asyncio.run(rabbit.wait_depth("media_probe", consumers=1))
    answered = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # the direct queue is declared just after the job queue
        done = control(rabbit, store, worker.instance_id, "status", "--json")
        if done.returncode == 0:
            answered.append(json.loads(done.stdout))
            break
        time.sleep(0.2)
    assert answered and answered[0]["status"]["activity"] == "Idle", procs.logs()
    assert answered[0]["status"]["pid"] == worker.pid

    paused = control(rabbit, store, worker.instance_id, "pause")
    assert paused.returncode == 0 and "paused" in paused.stdout, paused.stderr
    asyncio.run(rabbit.wait_depth("media_probe", consumers=0))
    asyncio.run(rabbit.publish("job_submit", "media_probe", probe_order(), content_type="application/json",
                               headers={"job_type": "media_probe"}))
    time.sleep(1.0)
    assert asyncio.run(rabbit.depth("media_probe")) == (1, 0)  # the order waits: nobody takes it

    resumed = control(rabbit, store, worker.instance_id, "resume")
    assert resumed.returncode == 0, resumed.stderr
    asyncio.run(rabbit.wait_depth("media_probe", messages=0, consumers=1))
    asyncio.run(rabbit.wait_depth("job_completed", messages=1))  # taken and answered

    stopped = control(rabbit, store, worker.instance_id, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert worker.wait(20) == 0, procs.logs()

    gone = control(rabbit, store, worker.instance_id, "pause")
    assert gone.returncode == 2 and "no worker" in gone.stderr
    audit = subprocess.run([sys.executable, "-m", "stepflow", "audit", "--kind", "worker", "--json",
                            "--store", store], env=rabbit.env(), cwd=ROOT, capture_output=True, text=True,
                           timeout=60, check=True)
    orders = [json.loads(line) for line in audit.stdout.splitlines()]
    assert [(o["actor"], o["data"]["order"], o["data"]["via"]) for o in orders] == [
        ("oncall", "status", "cli"), ("oncall", "stop_consuming_jobs", "cli"),
        ("oncall", "resume_consuming_jobs", "cli"), ("oncall", "stop_worker", "cli")]


def test_unreachable_broker_is_exit_4_and_records_nothing(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path)
    done = subprocess.run([sys.executable, "-m", "stepflow", "worker-control", "w-1", "pause", "--store", store,
                           "--amqp-url", "amqp://guest:guest@127.0.0.1:1/"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False, env=Rabbit("", "").env())
    assert done.returncode == 4 and "broker unreachable at amqp://guest:***@127.0.0.1:1/" in done.stderr
    assert "Traceback" not in done.stderr
    audit = subprocess.run([sys.executable, "-m", "stepflow", "audit", "--kind", "worker", "--json", "--store", store],
                           cwd=ROOT, capture_output=True, text=True, timeout=60, check=True, env=Rabbit("", "").env())
    assert audit.stdout == ""
