"""The stepflow contender's worker: one no-op job type, run by `stepflow worker` processes.

    stepflow worker benchmarks.harness.noop_worker:worker --prefix P --prefetch 64

A timed load passes the previous job's end time as the parameter `prev` (a template over the
previous step's output `t`); the handler records the gap and returns its own end time. With
$BENCH_GAPS_FILE set, the gaps are written there as JSON when the process exits.
"""

from __future__ import annotations

import atexit
import json
import os
import time
from pathlib import Path
from typing import Any

from stepflow.sdk import JobContext, Worker

worker = Worker("bench-noop", version="1.0.0", description="no-op jobs for the benchmark", prefetch=64,
                heartbeat_s=30.0)
GAPS: list[float] = []


@worker.job("noop")
async def noop(params: dict[str, Any], ctx: JobContext) -> dict[str, Any] | None:
    prev = params.get("prev")
    if isinstance(prev, (int, float)):
        GAPS.append(time.time() - prev)
    if prev is not None or params.get("timed"):
        return {"t": time.time()}
    return None


def _dump() -> None:
    path = os.environ.get("BENCH_GAPS_FILE")
    if path:
        Path(path).write_text(json.dumps(GAPS))


atexit.register(_dump)
