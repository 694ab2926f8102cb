"""Workflows started over HTTP: `stepflow serve --http` on SQLite, N client threads.

Each client thread keeps one HTTP/1.1 connection and posts `POST /api/workflows` (one-step
no-op workflows) back to back for a fixed time; with `batch` > 0 it posts
`POST /api/workflows:batch` with that many starts per request instead. A start counts once
its answer (201) came: the start is committed (the views follow within a pass; after the
run, a listing with `?after=` the last position answered times how long they took to show
every start, `views_behind_ms`). No worker runs: the orders wait in their queue (declared here, as a worker would,
before the run: without it every order came back unroutable and failed its workflow, a
second commit per start that is not the start path), which is deleted after the run, so
what is measured is the start path alone. The store is read afterwards: every answered id
must be stored, once.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.harness.common import (
    AMQP_URL,
    PYTHON,
    BenchFailure,
    Processes,
    child_env,
    delete_broker_objects,
    summary_ms,
    unique_prefix,
    wait_until,
    will_declare,
)
from stepflow.adapters.amqp import Topology
from stepflow.adapters.persistence import open_engine

DEFINITION = {"identifier": "bench-start", "steps": [{"id": "only", "job_type": "noop"}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", "/readyz")
        ok = connection.getresponse().status == 200
        connection.close()
        return ok
    except OSError:
        return False


def _declare_job_queue(topology: Topology, job_type: str) -> None:
    """The job type's queue, bound as a worker binds it, so the orders wait there."""
    import aio_pika

    async def go() -> None:
        connection = await aio_pika.connect(AMQP_URL, timeout=5)
        try:
            await topology.declare_job_queue(await connection.channel(), job_type)
        finally:
            await connection.close()

    asyncio.run(go())


def _client(port: int, deadline: float, batch: int, ids: list[str], latencies: list[float],
            errors: list[str], positions: list[int] | None = None) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    one = json.dumps({"definition": DEFINITION["identifier"]}).encode()
    many = json.dumps({"starts": [{"definition": DEFINITION["identifier"]}] * batch}).encode()
    path, body = ("/api/workflows:batch", many) if batch else ("/api/workflows", one)
    while time.monotonic() < deadline:
        began = time.perf_counter()
        try:
            connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as error:
            errors.append(repr(error))
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            continue
        if response.status != 201:
            errors.append(f"{response.status} {data[:200]!r}")
            continue
        latencies.append(time.perf_counter() - began)
        answer = json.loads(data)
        if positions is not None:
            positions.append(answer["notification_id"])
        if batch:
            ids.extend(item["workflow_id"] for item in answer["items"])
        else:
            ids.append(answer["workflow_id"])
    connection.close()


def run(log_dir: Path, *, clients: int = 8, seconds: float = 5.0, batch: int = 0, tag: str = "http") -> dict[str, Any]:
    """Start workflows over HTTP for `seconds`; workflows/s, request latency, and the check."""
    prefix = unique_prefix("http")
    topology = Topology(prefix)
    queues, exchanges = [*topology.queues(), topology.job_queue("noop")], list(topology.exchanges())
    log_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="stepflow-bench-http-"))
    (tmp / "start.json").write_text(json.dumps(DEFINITION))
    url = f"sqlite:///{tmp / 'bench.sqlite'}"
    port = free_port()
    will_declare(queues, exchanges)
    ids: list[str] = []
    latencies: list[float] = []
    errors: list[str] = []
    try:
        open_engine(url).close()  # the tables, before the server
        with Processes(log_dir) as procs:
            server = procs.start(f"backend-{tag}", [
                PYTHON, "-m", "stepflow", "serve", "--store", url, "--prefix", prefix,
                "--http", f"127.0.0.1:{port}", "--definitions", str(tmp / "start.json"), "--log-level", "warning"],
                child_env())
            wait_until(lambda: _ready(port), 60, "the HTTP API to be ready", procs)
            _declare_job_queue(topology, DEFINITION["steps"][0]["job_type"])  # type: ignore[index]
            warm: list[str] = []
            _client(port, time.monotonic() + 0.3, batch, warm, [], errors)  # first requests: imports, caches
            cpu0 = server.cpu_seconds()
            deadline = time.monotonic() + seconds
            began = time.monotonic()
            positions: list[int] = []
            threads = [threading.Thread(target=_client, args=(port, deadline, batch, ids, latencies, errors, positions),
                                        name=f"http-client-{i}") for i in range(clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(seconds + 60)
            elapsed = time.monotonic() - began
            cpu = server.cpu_seconds() - cpu0
            views_behind_ms = _views_behind_ms(port, max(positions, default=0), errors)
            procs.check()
        reader = open_engine(url)
        try:
            stored = [str(e.originator_id) for _, e in reader.notifications(0, 10_000_000, topics=("WorkflowStarted",))]
        finally:
            reader.close()
    finally:
        delete_broker_objects(queues, exchanges)
        shutil.rmtree(tmp, ignore_errors=True)
    if errors:
        raise BenchFailure(f"{tag}: {len(errors)} failed request(s), e.g. {errors[0]}")
    if not ids:
        raise BenchFailure(f"{tag}: no workflow started")
    missing = set(ids) - set(stored)
    if missing or len(stored) != len(set(stored)) or len(set(ids)) != len(ids):
        raise BenchFailure(f"{tag}: {len(ids)} answered, {len(stored)} stored, {len(missing)} answered and not stored")
    return {"clients": clients, "batch": batch, "seconds": round(elapsed, 3), "workflows": len(ids),
            "requests": len(latencies), "workflows_per_s": round(len(ids) / elapsed, 1),
            "request_ms": summary_ms(latencies), "server_cpu_ms_per_workflow": round(1000 * cpu / len(ids), 3),
            "views_behind_ms": views_behind_ms}


def _views_behind_ms(port: int, position: int, errors: list[str]) -> float:
    """How long after the last answer a listing shows every start (`?after=`, which waits)."""
    began = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", f"/api/workflows?limit=1&after={position}")
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    if response.status != 200:
        errors.append(f"views: {response.status} {data[:200]!r}")
    return round(1000 * (time.perf_counter() - began), 1)
