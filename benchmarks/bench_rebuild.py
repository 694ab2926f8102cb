"""Rebuild every view from a generated log; compare with reading the raw notification log.

    python benchmarks/bench_rebuild.py                  # 1,000,000 events in a temporary SQLite file
    python benchmarks/bench_rebuild.py --quick          # ~20,000 events
    python benchmarks/bench_rebuild.py --events 200000 --store postgresql://postgres@127.0.0.1/test?schema=bench
    python benchmarks/bench_rebuild.py --store sqlite:////tmp/bench.sqlite --reuse   # keep a log between runs

The log is written through the engine: `Workflow` aggregates driven by their own commands
(progress, completion, ~10 % errors retried) with a simulated clock, many in flight at once so
that streams interleave as they do in production, saved `--concurrency` aggregates per
transaction. Then it measures, on the same store:
  raw      `recorder.select_notifications` over the whole log (eventsourcing's notification
           log API, rows only, no decoding): the reference speed
  decoded  `engine.notifications` (those rows decoded into events)
  fast     `stepflow.projections.log` (the same query without per-row objects, decoded):
           what the runner reads with
  rebuild  `ProjectionRunner.rebuild()` of all views (and of each view alone)
and prints events/s and the ratio of rebuild speed to raw reading speed. Goal on SQLite:
>= 50,000 events/s for the full rebuild.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from stepflow.adapters.logging import configure
from stepflow.adapters.persistence import engine_env
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.definitions import build_definition
from stepflow.engine.workflow import Workflow
from stepflow.projections import ProjectionRunner
from stepflow.projections.log import log_reader

DEFINITION = build_definition({
    "identifier": "bench", "tags": ["bench"],
    "parameters": [{"id": "sizes", "type": "array_of_strings", "default": ["sd", "hd", "uhd"]}],
    "steps": [
        {"id": "probe", "job_type": "probe"},
        {"id": "encode", "job_type": "encode", "parents": ["probe"], "fan_out": "{workflow.sizes}",
         "parameters": {"size": "{item}"}, "retry": {"max_attempts": 3, "backoff_s": 0}},
        {"id": "publish", "job_type": "publish", "parents": ["encode"]},
    ],
})
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def script(workflow: Workflow, rng: random.Random, clock: list[datetime]) -> Iterator[None]:
    """Drive one workflow to its end, one command per step of the generator."""
    state = workflow.state
    for step_id in ("probe", "encode", "publish"):
        for job_id in list(state.steps[step_id].jobs):
            current = job_id
            while True:
                worker = f"worker-{rng.randrange(20)}"
                for progression in (30, 70):
                    workflow.record_progress(current, progression, now=clock[0], worker=worker)
                    yield
                if step_id == "encode" and rng.random() < 0.1 and state.jobs[current].attempt < 3:
                    workflow.record_error(current, "transient failure", now=clock[0], worker=worker,
                                          execution_duration=rng.uniform(0.5, 3))
                    yield
                    current = state.steps[step_id].jobs[state.jobs[current].index]
                    continue
                workflow.record_completed(current, now=clock[0], worker=worker,
                                          execution_duration=rng.lognormvariate(1.0, 0.6))
                yield
                break


def generate(engine: WorkflowEngine, target: int, concurrency: int, seed: int = 7) -> int:
    rng = random.Random(seed)
    clock = [T0]
    written = 0
    flight: dict[UUID, tuple[Workflow, Iterator[None]]] = {}
    started = time.perf_counter()
    last_report = started
    while written < target or flight:
        while len(flight) < concurrency and written < target:
            workflow = Workflow.start(uuid4(), DEFINITION, {}, now=clock[0], labels=["bench"], actor="bench")
            flight[workflow.id] = (workflow, script(workflow, rng, clock))
        batch = []
        for workflow_id, (workflow, steps) in list(flight.items()):
            if next(steps, StopIteration) is StopIteration:
                del flight[workflow_id]
            batch.append(workflow)
        if batch:
            written += sum(len(w._pending) for w in batch)
            engine.save(*batch)  # one transaction for the whole round
        clock[0] += timedelta(seconds=0.5)
        if time.perf_counter() - last_report > 5:
            last_report = time.perf_counter()
            print(f"  generated {written:,} events ({written / (last_report - started):,.0f}/s)", file=sys.stderr)
    return written


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:>12,.0f} events/s  ({seconds:6.2f} s)"


def measure_reads(engine: WorkflowEngine, batch: int = 10_000) -> tuple[float, float, float]:
    """Seconds to read the whole log three ways, after one untimed pass warms the page cache."""
    position = 0
    while rows := engine.recorder.select_notifications(position, batch, inclusive_of_start=False):
        position = rows[-1].id
    started = time.perf_counter()
    position = 0
    while rows := engine.recorder.select_notifications(position, batch, inclusive_of_start=False):
        position = rows[-1].id
    raw = time.perf_counter() - started
    timings = [raw]
    for read in (engine.notifications, log_reader(engine)):
        started = time.perf_counter()
        position = 0
        while items := read(position, batch):
            position = items[-1][0]
        timings.append(time.perf_counter() - started)
    return timings[0], timings[1], timings[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="about 20,000 events")
    parser.add_argument("--store", help="store URL (default: a temporary SQLite file)")
    parser.add_argument("--reuse", action="store_true", help="use the events already in --store")
    parser.add_argument("--concurrency", type=int, default=1000, help="workflows in flight while generating")
    parser.add_argument("--batch-size", type=int, default=50_000, help="events per rebuild transaction")
    args = parser.parse_args()
    configure("console", "warning")
    target = 20_000 if args.quick else args.events
    tmp = None
    if args.store is None:
        tmp = tempfile.mkdtemp(prefix="stepflow-bench-")
        args.store = f"sqlite:///{os.path.join(tmp, 'bench.sqlite')}"
    engine = WorkflowEngine(env=engine_env(args.store))
    existing = engine.max_notification_id()
    print(f"store {args.store}: {existing:,} events")
    if not (args.reuse and existing):
        started = time.perf_counter()
        written = generate(engine, target - existing, args.concurrency)
        print(f"generate {written:>10,} events: {rate(written, time.perf_counter() - started)}")
    total = engine.max_notification_id()

    raw, decoded, fast = measure_reads(engine)
    print(f"read raw      {total:>10,}: {rate(total, raw)}")
    print(f"read decoded  {total:>10,}: {rate(total, decoded)}")
    print(f"read fast     {total:>10,}: {rate(total, fast)}")
    runner = ProjectionRunner(engine)
    results = {}
    for names in (None, ["workflows"], ["job_stats"]):
        started = time.perf_counter()
        read = runner.rebuild(names, batch_size=args.batch_size)
        elapsed = time.perf_counter() - started
        label = "+".join(names or runner.names)
        results[label] = read / elapsed
        print(f"rebuild {label:<20}: {rate(read, elapsed)}  ratio to raw read {raw / elapsed:.2f}, "
              f"to fast decoded read {fast / elapsed:.2f}")
    best = results["+".join(runner.names)]
    print(f"\nall views: {best:,.0f} events/s = {best * raw / total:.2f} x raw notification reading "
          f"({'meets' if best >= 50_000 else 'below'} the 50,000 events/s goal)")
    runner.close()
    engine.close()
    if tmp:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
