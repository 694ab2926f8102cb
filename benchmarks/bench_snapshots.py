"""Loading a workflow with a long history, with and without snapshots.

    python benchmarks/bench_snapshots.py                 # 100,000 events per workflow, temporary SQLite
    python benchmarks/bench_snapshots.py --quick         # 20,000
    python benchmarks/bench_snapshots.py --store postgresql://postgres@127.0.0.1/test?schema=bench

Two shapes of long history, each written through the engine (`execute`, 1,000 commands per
transaction, so the engine takes its snapshots every `snapshotting_intervals` events as in
production):
  long job     one job reporting progress N times (small state, many events)
  wide fan-out 500 jobs reporting progress in turn (a state of 500 jobs)
For each: the time to load the current state (`engine.workflow_state`: latest snapshot plus
the events after it), the same with snapshots off (every event folded), loading at a
version in the middle (`engine.load(id, version)`), and replay of the read model.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any, ClassVar
from uuid import UUID

from stepflow.adapters.logging import configure
from stepflow.adapters.persistence import engine_env
from stepflow.engine import commands as cmd
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.definitions import build_definition
from stepflow.projections.replay import replay

LONG = build_definition({"identifier": "long", "steps": [{"id": "run", "job_type": "run"}]})
WIDE = build_definition({
    "identifier": "wide",
    "parameters": [{"id": "items", "type": "array_of_integers"}],
    "steps": [{"id": "run", "job_type": "run", "fan_out": "{workflow.items}", "parameters": {"n": "{item}"}}],
})


class NoSnapshots(WorkflowEngine):
    """The same store read without snapshots: every load folds the whole history."""

    name = WorkflowEngine.name  # same tables (PostgreSQL names them after the application)
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {}


def timed(func: Callable[[], Any], repeat: int = 5) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        func()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def write(engine: WorkflowEngine, shape: str, events: int) -> UUID:
    if shape == "long":
        workflow_id = engine.start_workflow(LONG)
    else:
        workflow_id = engine.start_workflow(WIDE, {"items": list(range(500))})
    jobs = engine.workflow_state(workflow_id).steps["run"].jobs
    written = len(engine.history(workflow_id))
    n = 0
    while written < events:
        size = min(1000, events - written)
        commands = [cmd.RecordProgress(workflow_id=workflow_id, job_id=jobs[(n + i) % len(jobs)],
                                       progression=(n + i) % 100, worker="w") for i in range(size)]
        engine.execute(commands)
        n += size
        written += size
    return workflow_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="events per workflow")
    parser.add_argument("--quick", action="store_true", help="20,000 events per workflow")
    parser.add_argument("--store", help="store URL (default: a temporary SQLite file)")
    args = parser.parse_args()
    configure("console", "warning")
    events = 20_000 if args.quick else args.events
    tmp = None
    if args.store is None:
        tmp = tempfile.mkdtemp(prefix="stepflow-bench-")
        args.store = f"sqlite:///{os.path.join(tmp, 'snapshots.sqlite')}"
    env = engine_env(args.store)
    engine = WorkflowEngine(env=env)
    plain = NoSnapshots(env=env)
    interval = next(iter(WorkflowEngine.snapshotting_intervals.values()))
    print(f"store {args.store}, snapshot every {interval} events, {events:,} events per workflow\n")
    print(f"{'shape':<13}{'write':>10}{'snapshots':>11}{'load':>11}{'no snapshots':>14}{'speed-up':>10}"
          f"{'load @mid':>11}{'no snap @mid':>14}{'replay view':>13}")
    for shape in ("long", "wide"):
        started = time.perf_counter()
        workflow_id = write(engine, shape, events)
        wrote = time.perf_counter() - started
        snapshots = len(list(engine.snapshots.get(workflow_id)))  # type: ignore[union-attr]
        version = engine.workflow_state(workflow_id).version
        middle = version // 2 + 7  # not on a snapshot
        fast = timed(functools.partial(engine.workflow_state, workflow_id))
        slow = timed(functools.partial(plain.workflow_state, workflow_id), repeat=3)
        fast_mid = timed(functools.partial(engine.load, workflow_id, middle))
        slow_mid = timed(functools.partial(plain.load, workflow_id, middle), repeat=3)
        replayed = timed(functools.partial(replay, engine, workflow_id, at=version), repeat=1)
        assert engine.workflow_state(workflow_id).version == plain.workflow_state(workflow_id).version
        print(f"{shape:<13}{wrote:>9.1f}s{snapshots:>11}{fast * 1000:>9.1f}ms{slow * 1000:>12.1f}ms"
              f"{slow / fast:>9.0f}x{fast_mid * 1000:>9.1f}ms{slow_mid * 1000:>12.1f}ms{replayed:>12.2f}s")
        sys.stdout.flush()
    engine.close()
    plain.close()
    if tmp:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
