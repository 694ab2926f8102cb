"""Celery on the same RabbitMQ: chains of K no-op tasks, and a chord for fan-out/fan-in.

    celery -A benchmarks.harness.celery_chain worker -P solo -Q QUEUE ...   (the harness starts these)

Settings, the fairest we know for a no-op throughput test: `task_acks_late` (acked after the
task ran, like stepflow's workers), persistent messages, publisher confirms on
(`confirm_publish`, as stepflow and the raw loop), no result backend for chains
(`task_ignore_result`), the `solo` pool (no-op tasks gain nothing from prefork children),
prefetch = the stepflow workers' prefetch, no events, gossip, mingle, heartbeat or remote
control. A chain is one message whose options carry the rest of the chain: the worker that
ran task i publishes task i+1, there is no central backend.

A chord needs a result backend: the chord run uses Celery's database backend on the same
PostgreSQL (a schema of its own), with `chord_unlock` polling every 50 ms.

The last task of a chain (or the chord's body) appends a line to a file per worker process;
the harness counts those lines to know when every chain is done. Timed loads pass a small
dict along the chain: the publish time, the last task's end, the gaps seen so far.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

from celery import Celery, chain, chord, group

from benchmarks.harness.common import (
    AMQP_URL,
    POSTGRES_URL,
    PYTHON,
    BenchFailure,
    Load,
    Processes,
    RunResult,
    child_env,
    cpu_self,
    delete_broker_objects,
    pg_schema,
    summary_ms,
    unique_prefix,
    wait_consumers,
    wait_until,
    will_declare,
)

NOOP = "bench.noop"
POOL = os.environ.get("BENCH_CELERY_POOL", "-P threads -c 4").split()
CONCURRENCY = int(POOL[POOL.index("-c") + 1]) if "-c" in POOL else 1
LAST = "bench.last"


def make_app(queue: str, prefetch: int, backend: str | None = None, schema: str | None = None) -> Celery:
    # As given: kombu reads the vhost from the path ("/" when there is none), and a slash
    # added after one ("/bench/") would name another vhost.
    app = Celery("bench", broker=AMQP_URL, backend=backend or None, set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        task_default_exchange=queue,
        task_default_routing_key=queue,
        task_acks_late=True,
        task_ignore_result=backend is None,
        task_default_delivery_mode="persistent",
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=max(1, prefetch // CONCURRENCY),  # prefetch in all, as stepflow's
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_enable_remote_control=False,
        worker_hijack_root_logger=False,
        broker_transport_options={"confirm_publish": True},
        broker_connection_retry_on_startup=True,
        result_chord_retry_interval=0.05,
        database_table_schemas={"task": schema, "group": schema} if schema else None,
        database_create_tables_at_setup=True,
    )
    return app


app = make_app(os.environ.get("BENCH_CELERY_QUEUE", "bench_celery"),
               int(os.environ.get("BENCH_CELERY_PREFETCH", "64")),
               os.environ.get("BENCH_CELERY_BACKEND") or None,
               os.environ.get("BENCH_CELERY_SCHEMA") or None)
_done_file: Any = None


def _step(trace: Any) -> Any:
    if isinstance(trace, dict):
        now = time.time()
        if trace.get("end") is not None:
            trace["gaps"].append(now - trace["end"])
        trace["end"] = time.time()
        return trace
    return None


@app.task(name=NOOP)
def noop(trace: Any = None) -> Any:
    return _step(trace)


@app.task(name=LAST)
def last(trace: Any, wf: str) -> None:
    global _done_file
    trace = _step(trace)
    if _done_file is None:
        directory = Path(os.environ.get("BENCH_CELERY_DONE", "/tmp"))
        _done_file = open(directory / f"{os.getpid()}.jsonl", "a", buffering=1)  # noqa: SIM115  process-long
    _done_file.write(json.dumps({"wf": wf, "t": time.time(), "trace": trace}) + "\n")


# --- the harness side --------------------------------------------------------------------


class DoneLines:
    """Reads the lines the workers append, incrementally."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.offsets: dict[Path, int] = {}
        self.lines: list[dict[str, Any]] = []

    def poll(self) -> int:
        for path in self.directory.glob("*.jsonl"):
            with open(path, "rb") as f:
                f.seek(self.offsets.get(path, 0))
                data = f.read()
            end = data.rfind(b"\n") + 1
            self.offsets[path] = self.offsets.get(path, 0) + end
            self.lines.extend(json.loads(line) for line in data[:end].splitlines() if line)
        return len(self.lines)


def _workflow(client: Celery, load: Load, wf: str) -> Any:
    trace = {"pub": time.time(), "end": None, "gaps": []} if load.timed else None
    if load.fan_out:
        return chord(group(client.signature(NOOP, args=(None,), immutable=True) for _ in range(load.fan_out)),
                     client.signature(LAST, args=(wf,)))
    if load.steps == 1:
        return client.signature(LAST, args=(trace, wf))
    return chain(client.signature(NOOP, args=(trace,)),
                 *(client.signature(NOOP) for _ in range(load.steps - 2)),
                 client.signature(LAST, args=(wf,)))


def run(load: Load, log_dir: Path, *, workers: int = 2, prefetch: int = 64, tag: str = "celery") -> RunResult:
    if load.fan_out and load.workflows != 1:
        raise ValueError("the chord run is for one workflow")
    queue = unique_prefix("celery") + "q"
    will_declare([queue], [queue])  # task_default_exchange is the queue's name
    done_dir = log_dir / f"{tag}-done-{queue}"
    done_dir.mkdir(parents=True, exist_ok=True)
    schema = backend = None
    if load.fan_out:  # a chord needs a result backend
        schema = queue.rstrip("_q")
        backend = "db+" + POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    env = child_env(BENCH_CELERY_QUEUE=queue, BENCH_CELERY_DONE=str(done_dir), BENCH_CELERY_PREFETCH=str(prefetch),
                    BENCH_CELERY_BACKEND=backend or "", BENCH_CELERY_SCHEMA=schema or "")
    client = make_app(queue, prefetch, backend, schema)
    done = DoneLines(done_dir)
    try:
        if schema:
            pg_schema("create", schema)
        # A Celery worker takes 10 s to stop (warm or cold); the run is over and every line
        # written, so it gets 0.5 s before SIGKILL.
        with Processes(log_dir, stop_timeout=0.5) as procs:
            worker_procs = [procs.start(f"worker-{tag}-{i}", [
                PYTHON, "-m", "celery", "-A", "benchmarks.harness.celery_chain", "worker", *POOL,
                "-Q", queue, "-n", f"{tag}{i}-{uuid.uuid4().hex[:6]}@%h", "--without-gossip", "--without-mingle",
                "--without-heartbeat", "-l", "WARNING"], env, stop_signal=signal.SIGQUIT)
                for i in range(workers)]
            wait_consumers(queue, workers, procs)
            t0 = time.time()
            cpu0 = cpu_self()
            with client.producer_or_acquire() as producer:
                if load.rate <= 0:
                    for n in range(load.workflows):
                        _workflow(client, load, f"wf{n}").apply_async(producer=producer)
                else:
                    began = time.perf_counter()
                    for n in range(load.workflows):
                        delay = began + n / load.rate - time.perf_counter()
                        if delay > 0:
                            time.sleep(delay)
                        _workflow(client, load, f"wf{n}").apply_async(producer=producer)
            wait_until(lambda: done.poll() >= load.workflows, load.deadline_s(),
                       f"{load.workflows} Celery {'chord' if load.fan_out else 'chains'}", procs, interval=0.05)
            cpu = {"worker": sum(p.cpu_seconds() for p in worker_procs), "client": cpu_self() - cpu0}
    finally:
        delete_broker_objects([queue], [queue])
        if schema:
            pg_schema("drop", schema)
    finished = {line["wf"] for line in done.lines}
    if len(finished) != load.workflows or len(done.lines) != load.workflows:
        raise BenchFailure(f"celery: {len(finished)} distinct of {len(done.lines)} completions, "
                           f"expected {load.workflows}")
    t_end = max(line["t"] for line in done.lines)
    traces = [line["trace"] for line in done.lines if isinstance(line.get("trace"), dict)]
    gaps = [g for trace in traces for g in trace["gaps"]]
    e2e = [line["t"] - line["trace"]["pub"] for line in done.lines if isinstance(line.get("trace"), dict)]
    return RunResult(contender="celery", load=load, seconds=t_end - t0, workflows=len(finished), jobs=load.jobs,
                     handler_gap_ms=summary_ms(gaps) if load.timed else None,
                     e2e_ms=summary_ms(e2e) if load.timed else None, cpu_s=cpu,
                     extra={"pool": " ".join(POOL), "result_backend": "database (PostgreSQL)" if backend else None})
