"""The replay scenario in its own process: generate a log, then rebuild every view from it.

    python -m benchmarks.harness.replay --events 1000000 --out FILE

Uses `benchmarks/bench_rebuild.py` (the projections issue's benchmark): the same generated
log (workflows driven through the engine, streams interleaved), the same raw reading of the
notification log as the reference, and `ProjectionRunner.rebuild()` of all views.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.bench_rebuild import generate, measure_reads
from stepflow.adapters.logging import configure
from stepflow.adapters.persistence import engine_env
from stepflow.engine.application import WorkflowEngine
from stepflow.projections import ProjectionRunner


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    configure("console", "warning")
    tmp = tempfile.mkdtemp(prefix="stepflow-bench-replay-")
    try:
        engine = WorkflowEngine(env=engine_env(f"sqlite:///{os.path.join(tmp, 'replay.sqlite')}"))
        started = time.perf_counter()
        written = generate(engine, args.events, 1000)
        generate_s = time.perf_counter() - started
        total = engine.max_notification_id()
        raw, decoded, fast = measure_reads(engine)
        runner = ProjectionRunner(engine)
        started = time.perf_counter()
        read = runner.rebuild(None, batch_size=50_000)
        rebuild_s = time.perf_counter() - started
        views = list(runner.names)
        runner.close()
        engine.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if read != total:
        raise SystemExit(f"rebuild read {read} events of {total}")
    Path(args.out).write_text(json.dumps({
        "events": total, "written": written, "generate_s": generate_s, "generate_events_per_s": written / generate_s,
        "raw_read_s": raw, "raw_read_events_per_s": total / raw, "decoded_read_events_per_s": total / decoded,
        "fast_read_events_per_s": total / fast, "rebuild_s": rebuild_s, "rebuild_events_per_s": read / rebuild_s,
        "rebuild_to_raw_read": raw / rebuild_s, "views": views,
    }))


if __name__ == "__main__":
    main()
