"""How the read commands write: tables, JSON lines, times and durations, a progress bar.

One place for the text a person reads, so every command prints ids, times and durations
the same way (tests/unit/test_cli_read.py and tests/e2e/test_cli_*.py pin the output).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import msgspec

from stepflow.projections.models import WorkflowDetail

_encoder = msgspec.json.Encoder()


def parse_time(text: str) -> datetime:
    """ISO 8601 (naive means UTC), a date, or an age: 30s, 15m, 2h, 7d."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if match:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return datetime.now(UTC) - timedelta(seconds=float(match.group(1)) * unit)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (ISO 8601 or 30s/15m/2h/7d)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def emit_json(value: Any, out: TextIO | None = None) -> None:
    (out or sys.stdout).write(_encoder.encode(value).decode() + "\n")


def table(rows: Iterable[Sequence[Any]], header: Sequence[str], out: TextIO | None = None) -> None:
    cells = [[str(c) for c in header]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        (out or sys.stdout).write("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n")


def when(moment: datetime | None, precise: bool = False) -> str:
    if moment is None:
        return ""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z" if precise else moment.strftime("%Y-%m-%d %H:%M:%SZ")


def seconds(value: float | None) -> str:
    if value is None:
        return ""
    if value < 1:
        return f"{value * 1000:.0f}ms" if value >= 0.001 else "<1ms"
    if value < 60:
        return f"{value:.3g}s" if value < 10 else f"{value:.0f}s"
    minutes, secs = divmod(int(value), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def render_detail(detail: WorkflowDetail, out: TextIO) -> None:
    """A workflow with its steps and, under each, its jobs: `show`, and `replay`'s result."""
    w = detail.workflow
    out.write(f"workflow {w.workflow_id}  {w.definition}@{w.definition_version}"
              f"{'  ' + w.title if w.title else ''}\n")
    out.write(f"  status    {w.status}{f' ({w.reason})' if w.reason else ''}, {w.progress:.0f}% "
              f"({w.steps_done}/{w.steps_total} steps), version {w.version}\n")
    out.write(f"  started   {when(w.started_at)} by {w.started_by or '?'}"
              f"{f', ended {when(w.ended_at)} after {seconds(w.duration_s)}' if w.ended_at else ''}\n")
    if w.labels or w.tags:
        out.write(f"  labels    {', '.join(w.labels)}{'  tags ' + ', '.join(w.tags) if w.tags else ''}\n")
    if w.parameters:
        out.write(f"  params    {' '.join(f'{k}={v!r}' for k, v in w.parameters.items())}\n")
    jobs_of: dict[str, list[Any]] = {}
    for job in detail.jobs:
        jobs_of.setdefault(job.step_id, []).append(job)
    rows: list[tuple[Any, ...]] = []
    for step in detail.steps:
        counts = ", ".join(f"{n} {status}" for status, n in step.job_counts.items())
        took = (step.ended_at - step.started_at).total_seconds() if step.ended_at and step.started_at else None
        rows.append((step.step_id, "", step.status, counts, "", seconds(took), step.reason or ""))
        jobs = jobs_of.get(step.step_id, [])
        for i, job in enumerate(jobs):
            branch = "└─" if i == len(jobs) - 1 else "├─"
            note = job.error or job.message or ""
            rows.append((f" {branch} {job.job_id[:8]}", f"#{job.index} try {job.attempt}", job.status,
                         f"{job.progression}%", job.worker or "", seconds(job.duration_s), note))
    out.write("\n")
    table(rows, ("STEP / JOB", "ITEM", "STATUS", "JOBS / PROGRESS", "WORKER", "TOOK", "NOTE"), out)


class ProgressBar:
    """`[#####-----] 45.0% 450,000/1,000,000  52,310 ev/s` on stderr, redrawn in place."""

    def __init__(self, label: str, out: TextIO | None = None, width: int = 30, start: int = 0) -> None:
        self.label, self.out, self.width = label, out or sys.stderr, width
        self.started = self.drawn = time.monotonic()
        self.first = start
        self.tty = self.out.isatty()

    def __call__(self, position: int, target: int) -> None:
        now = time.monotonic()
        if now - self.drawn < (0.1 if self.tty else 5.0) and position < target:
            return
        self.drawn = now
        fraction = position / target if target else 1.0
        filled = int(fraction * self.width)
        rate = (position - self.first) / max(now - self.started, 1e-9)
        line = (f"{self.label} [{'#' * filled}{'-' * (self.width - filled)}] {100 * fraction:5.1f}% "
                f"{position:,}/{target:,}  {rate:,.0f} ev/s")
        self.out.write(("\r" + line) if self.tty else line + "\n")
        self.out.flush()

    def close(self) -> None:
        if self.tty:
            self.out.write("\n")
            self.out.flush()
