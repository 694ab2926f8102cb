"""The stepflow contender: `stepflow worker` processes and the benchmark backend, on SQLite or PostgreSQL.

The harness opens the store first (so the tables exist), starts the workers and waits until
they consume their queue, then starts the backend (`benchmarks.harness.stepflow_backend`),
which starts the workflows. Completion is read from the store, as any client would: the
`WorkflowCompleted` notifications (a `WorkflowFailed` fails the run). Time runs from the first
`WorkflowStarted` to the last `WorkflowCompleted` (the engine's own timestamps).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.harness.common import (
    POSTGRES_URL,
    PYTHON,
    BenchFailure,
    Load,
    Processes,
    RssSampler,
    RunResult,
    child_env,
    cpu_self,
    delete_broker_objects,
    pg_schema,
    summary_ms,
    unique_prefix,
    wait_consumers,
    will_declare,
)
from stepflow.adapters.amqp import Topology
from stepflow.adapters.persistence import open_engine
from stepflow.engine import events as ev


def run(load: Load, log_dir: Path, *, store: str = "sqlite", workers: int = 2, prefetch: int = 64,
        tag: str | None = None, backend_args: tuple[str, ...] = (),
        backend_env: dict[str, str] | None = None) -> RunResult:
    tag = tag or f"stepflow-{store}"
    if store not in ("sqlite", "postgres"):
        raise ValueError(f"unknown store {store!r}")
    prefix = unique_prefix("sf")
    topology = Topology(prefix)
    queues, exchanges = [*topology.queues(), topology.job_queue("noop")], list(topology.exchanges())
    log_dir.mkdir(parents=True, exist_ok=True)
    out = log_dir / f"{tag}-backend.json"
    gap_files = [log_dir / f"{tag}-gaps-{i}.json" for i in range(workers)]
    tmp = Path(tempfile.mkdtemp(prefix="stepflow-bench-"))
    schema = prefix.rstrip("_") if store == "postgres" else None
    reader = None
    completed: dict[str, float] = {}
    will_declare(queues, exchanges)
    spawned = time.time()  # before the store is opened and the first process started (start-up included)
    try:
        if schema:
            pg_schema("create", schema)
            url = f"{POSTGRES_URL}?schema={schema}"
        else:
            url = f"sqlite:///{tmp / 'bench.sqlite'}"  # an absolute path: sqlite:////tmp/...
        reader = open_engine(url)  # creates the tables before any other process touches the store
        with Processes(log_dir) as procs:
            worker_procs = [procs.start(
                f"worker-{tag}-{i}",
                [PYTHON, "-m", "stepflow", "worker", "benchmarks.harness.noop_worker:worker", "--prefix", prefix,
                 "--prefetch", str(prefetch), "--heartbeat", "30", "--log-level", "warning"],
                child_env(BENCH_GAPS_FILE=str(gap_files[i]))) for i in range(workers)]
            wait_consumers(topology.job_queue("noop"), workers, procs)
            backend = procs.start(f"backend-{tag}", [
                PYTHON, "-m", "benchmarks.harness.stepflow_backend", "--store", url, "--prefix", prefix,
                "--load", json.dumps(dataclasses.asdict(load)), "--out", str(out), *backend_args],
                child_env(**(backend_env or {})))
            position = 0
            deadline = time.monotonic() + load.deadline_s()
            cpu0 = cpu_self()
            with RssSampler(backend) as rss:
                while len(completed) < load.workflows:
                    procs.check()
                    if time.monotonic() > deadline:
                        raise BenchFailure(f"{tag}: {len(completed)}/{load.workflows} workflows completed after "
                                           f"{load.deadline_s():.0f} s\n{backend.tail()}")
                    # Up to the last id, so that what was scanned is never scanned again.
                    upto = reader.max_notification_id()
                    items = reader.notifications(position, 20_000, topics=("WorkflowCompleted", "WorkflowFailed"),
                                                 stop=upto)
                    for _, event in items:
                        if isinstance(event, ev.WorkflowFailed):
                            raise BenchFailure(f"{tag}: workflow {event.originator_id} failed: {event.reason}")
                        completed[str(event.originator_id)] = event.timestamp.timestamp()
                    position = items[-1][0] if len(items) == 20_000 else upto
                    time.sleep(0.2)
                cpu = {"worker": sum(p.cpu_seconds() for p in worker_procs), }
                harness_cpu = cpu_self() - cpu0  # measurement, not the contender's
                backend.stop(60)
        if not out.exists():
            raise BenchFailure(f"{tag}: the backend wrote no results\n{backend.tail()}")
        data = json.loads(out.read_text())
        started = _started(reader, load)
    finally:
        if reader is not None:
            reader.close()
        delete_broker_objects(queues, exchanges)
        if schema:
            pg_schema("drop", schema)
        shutil.rmtree(tmp, ignore_errors=True)
    cpu["backend"] = data["cpu_s"]
    # More than one of each only if the broker redelivered or a crash republished (duplicates
    # are recognised by their ids); fewer means something was lost.
    if data["orders"] < load.jobs or data["completions"] < load.jobs:
        raise BenchFailure(f"{tag}: {data['orders']} orders published and {data['completions']} completions "
                           f"received, expected {load.jobs} of each")
    if set(completed) != set(started):
        raise BenchFailure(f"{tag}: {len(completed)} completed, {len(started)} started")
    t0 = min(started.values())
    e2e = [completed[w] - started[w] for w in completed]
    gaps: list[float] = []
    for path in gap_files:
        if path.exists():
            gaps.extend(json.loads(path.read_text()))
    return RunResult(
        contender=tag, load=load, seconds=max(completed.values()) - t0, workflows=len(completed), jobs=load.jobs,
        step_latency_ms=summary_ms(data["step_latency"]), handler_gap_ms=summary_ms(gaps) if load.timed else None,
        e2e_ms=summary_ms(e2e), rss_mb=rss.samples, cpu_s=cpu,
        extra={"backend_stats": data["stats"], "store": store, "harness_cpu_s": round(harness_cpu, 3),
               "backend_env": backend_env or {}, "duplicate_completions": data["completions"] - load.jobs,
               "duplicate_orders": data["orders"] - load.jobs, "stages": data.get("stages", {}),
               "with_startup_s": round(max(completed.values()) - spawned, 4)},
    )


def _started(reader: object, load: Load) -> dict[str, float]:
    """WorkflowStarted timestamps, by workflow id."""
    started: dict[str, float] = {}
    position = 0
    while len(started) < load.workflows:
        items = reader.notifications(position, 20_000, topics=("WorkflowStarted",))  # type: ignore[attr-defined]
        if not items:
            break
        for position, event in items:
            started[str(event.originator_id)] = event.timestamp.timestamp()
    return started
