"""`stepflow timeline`: workflows and jobs per status, and job-type durations, per time bin.

    stepflow timeline --bin hour --since 24h                # the last day, hour by hour
    stepflow timeline --bin minute --since 2024-05-01T12:00 --until 2024-05-01T13:00 --job-type encode
    stepflow timeline --bin day --json                      # one JSON object per bin

The per-job-type totals stay `stepflow stats` (`stepflow.adapters.cli.reads`); this is the
same figures spread over time, as the original Step Flow's statistics were. A workflow or a
job attempt counts in the bin of its start (submission), under its status now; a completed
job's duration in the bin where it ended (p50 and p95 are exact, nearest rank). Bins are
aligned to UTC; empty bins are listed too (in the tables, only with `--all`).

Exit codes: 0 ok; 2 bad usage (a range of more than 1,500 bins, `--since` after `--until`);
4 store unreachable.
"""

from __future__ import annotations

import argparse

from stepflow.adapters.cli import EXIT_OK
from stepflow.adapters.cli.formatting import emit_json, parse_time, seconds, table
from stepflow.adapters.cli.session import Session, UsageError, read_command
from stepflow.projections.timeline import BIN_SECONDS, Timeline, timeline


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = read_command(sub, "timeline", "workflows and jobs per status, job durations, per minute/hour/day",
                     cmd_timeline)
    p.add_argument("--bin", choices=tuple(BIN_SECONDS), default="hour", help="bin width (default hour)")
    p.add_argument("--since", type=parse_time,
                   help="from (ISO 8601 or 30m/2h/7d ago; default: 60 minutes, 24 hours or 30 days back)")
    p.add_argument("--until", type=parse_time, help="up to (default: now)")
    p.add_argument("--job-type", help="only this job type's jobs and durations")
    p.add_argument("--definition", help="only the workflows (and their jobs) of this definition identifier")
    p.add_argument("--all", action="store_true", help="list empty bins too")


def cmd_timeline(args: argparse.Namespace) -> int:
    with Session(args) as s:
        try:
            line = timeline(s.store, bin=args.bin, since=args.since, until=args.until, job_type=args.job_type,
                            definition=args.definition)
        except ValueError as error:
            raise UsageError(str(error)) from None
    if args.json:
        for item in line.bins:
            emit_json(item)
        return EXIT_OK
    render(line, show_empty=args.all)
    return EXIT_OK


def render(line: Timeline, *, show_empty: bool = False) -> None:
    """Two tables: counts per bin, then durations per bin and job type."""
    fmt = "%Y-%m-%d %H:%M" if line.bin != "day" else "%Y-%m-%d"

    def counts(values: dict[str, int]) -> str:
        return ", ".join(f"{status} {n}" for status, n in sorted(values.items()))

    table(((b.start.strftime(fmt), sum(b.workflows.values()), counts(b.workflows), sum(b.jobs.values()),
            counts(b.jobs)) for b in line.bins if show_empty or b.workflows or b.jobs),
          (f"{line.bin.upper()} (UTC)", "WORKFLOWS", "BY STATUS", "JOBS", "BY STATUS"))
    rows = [(b.start.strftime(fmt), d.job_type, d.count, seconds(d.p50_s), seconds(d.p95_s), seconds(d.mean_s),
             seconds(d.max_s)) for b in line.bins for d in b.durations]
    if rows:
        print()
        table(rows, (f"{line.bin.upper()} (UTC)", "JOB TYPE", "COMPLETED", "P50", "P95", "MEAN", "MAX"))
