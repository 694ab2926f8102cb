"""Workers for the fault suite: `stepflow worker tests/faults/fault_workers.py:faults`.

- `fault_a`, `fault_b`: answer at once (after a little random jitter, sometimes with a
  progression), outputs derived from the parameters; with `$STEPFLOW_FAULT_JOURNAL` set, each
  run is journaled (`run <job> <pid>`), so a test can count jobs executed twice;
- `fault_hang`: hangs (no progression) on attempt 1 when `hang` is true, so only the backend's
  timeout ends it; answers on later attempts. Journals `start <job> <attempt> <pid>`.
"""

from __future__ import annotations

import asyncio
import os
import random

from stepflow.sdk import JobContext, Worker

FAULT_TYPES = ("fault_a", "fault_b", "fault_hang")

faults = Worker("faults-test", version="1.0.0", description="fault suite workers", prefetch=8, heartbeat_s=2.0)


async def _answer(params: dict, ctx: JobContext) -> dict:
    journal = os.environ.get("STEPFLOW_FAULT_JOURNAL")
    if journal:
        await asyncio.to_thread(_append, journal, f"run {ctx.job_id} {os.getpid()}\n")
    await asyncio.sleep(random.uniform(0, float(params.get("jitter", 0.01))))
    if random.random() < 0.3:
        await ctx.progress(50, "half way")
    return {"echo": params.get("name", ""), "item": params.get("item", ""), "attempt": ctx.attempt}


@faults.job("fault_a")
async def fault_a(params: dict, ctx: JobContext) -> dict:
    return await _answer(params, ctx)


@faults.job("fault_b")
async def fault_b(params: dict, ctx: JobContext) -> dict:
    return await _answer(params, ctx)


@faults.job("fault_hang")
async def fault_hang(params: dict, ctx: JobContext) -> dict:
    journal = params.get("journal")
    if journal:
        line = f"start {ctx.job_id} {ctx.attempt} {os.getpid()}\n"
        await asyncio.to_thread(_append, journal, line)
    if params.get("hang") and ctx.attempt == 1:
        await asyncio.sleep(3600)  # never answers: no progression, no result
    return {"attempt": ctx.attempt}


def _append(path: str, line: str) -> None:
    with open(path, "a") as out:
        out.write(line)
