"""Read commands over the views: workflows, show, jobs, workers, stats.

Every read command takes `--json` (JSON lines for lists, one JSON document for `show`) and
the common `--store`. Commands reading views (workflows, show, jobs, stats) first bring the
views up to date in this process (`--no-catch-up` reads them as they are, e.g. when a
`stepflow project` process or the backend keeps them current). A workflow id may be
shortened to a unique prefix (as printed by `stepflow workflows`).

Exit codes (see `stepflow.adapters.cli`): 0 ok; 2 bad usage, unknown or ambiguous id;
4 store unreachable.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from stepflow.adapters.cli import EXIT_OK
from stepflow.adapters.cli.formatting import (
    emit_json,
    parse_time,
    render_detail,
    seconds,
    table,
    when,
)
from stepflow.adapters.cli.session import Session, UsageError, read_command
from stepflow.engine.statuses import JOB_STATUSES, WORKFLOW_STATUSES
from stepflow.projections import WorkersView, queries


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = read_command(sub, "workflows", "list workflows, newest first", cmd_workflows, description=(
        "List workflows, newest first, a page at a time (--cursor, --all), filtered by status, definition, "
        "label and start time. Deleted workflows show only when --status asks for them."))
    p.add_argument("--status", action="append", choices=WORKFLOW_STATUSES, metavar="STATUS",
                   help=f"{', '.join(WORKFLOW_STATUSES)} (repeatable)")
    p.add_argument("--definition", help="definition identifier")
    p.add_argument("--label", help="a workflow label or definition tag")
    p.add_argument("--since", type=parse_time, help="started at or after (ISO 8601 or 2h, 7d...)")
    p.add_argument("--until", type=parse_time, help="started before")
    p.add_argument("--limit", type=int, default=50, help="page size (default 50)")
    p.add_argument("--cursor", help="continue after a previous page")
    p.add_argument("--all", action="store_true", help="every page")
    p.add_argument("--oldest-first", action="store_true", help="oldest first instead of newest first")

    p = read_command(sub, "show", "one workflow: its steps and their jobs", cmd_show, description=(
        "One workflow: its status, parameters and labels, each step and, under it, each job with its "
        "attempt, progress, worker, duration and error. --json: one object."))
    p.add_argument("workflow_id", help="a workflow id, or a unique prefix of one (as `workflows` prints)")

    p = read_command(sub, "jobs", "list jobs (every attempt), newest first", cmd_jobs)
    p.add_argument("--status", action="append", choices=JOB_STATUSES, metavar="STATUS",
                   help=f"{', '.join(JOB_STATUSES)} (repeatable)")
    p.add_argument("--job-type", help="only jobs of this type")
    p.add_argument("--workflow", help="only this workflow's jobs (an id or unique prefix)")
    p.add_argument("--limit", type=int, default=50, help="page size (default 50)")
    p.add_argument("--cursor", help="continue after a previous page")

    p = read_command(sub, "workers", "workers known from their announcements", cmd_workers, views=False)
    p.add_argument("--alive", action="store_true", help="only workers heard of within the timeout")
    p.add_argument("--gone-after", type=float, default=90.0, metavar="S", help="silence before 'gone' (90 s)")

    p = read_command(sub, "stats", "per job type: outcomes, success rate, durations", cmd_stats)
    p.add_argument("--job-type", help="only this job type")


def cmd_workflows(args: argparse.Namespace) -> int:
    with Session(args) as s:
        cursor, rows = args.cursor, []
        while True:
            page = queries.list_workflows(
                s.store, status=args.status, definition=args.definition, label=args.label,
                started_after=args.since, started_before=args.until, limit=args.limit, cursor=cursor,
                oldest_first=args.oldest_first, include_deleted=bool(args.status),
            )
            for w in page.items:
                if args.json:
                    emit_json(w)
                else:
                    rows.append((w.workflow_id[:8], f"{w.definition}@{w.definition_version}",
                                 w.status, f"{w.progress:.0f}%", ",".join(w.current_steps),
                                 when(w.started_at), seconds(w.duration_s), ",".join(w.labels)))
            cursor = page.next_cursor
            if not args.all or cursor is None:
                break
        if not args.json:
            table(rows, ("ID", "DEFINITION", "STATUS", "PROGRESS", "CURRENT", "STARTED", "TOOK", "LABELS"))
        if cursor is not None:
            print(f"more: --cursor {cursor}", file=sys.stderr)
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    with Session(args) as s:
        detail = queries.get_workflow(s.store, s.workflow_id(args.workflow_id))
        if detail is None:
            raise UsageError(f"unknown workflow {args.workflow_id}")
        if args.json:
            emit_json(detail)
        else:
            render_detail(detail, sys.stdout)
    return EXIT_OK


def cmd_jobs(args: argparse.Namespace) -> int:
    with Session(args) as s:
        workflow = s.workflow_id(args.workflow) if args.workflow else None
        page = queries.list_jobs(s.store, status=args.status, job_type=args.job_type, workflow_id=workflow,
                                 limit=args.limit, cursor=args.cursor)
    if args.json:
        for job in page.items:
            emit_json(job)
    else:
        table(((j.job_id[:8], j.workflow_id[:8], j.step_id, f"#{j.index}", j.attempt, j.job_type, j.status,
                f"{j.progression}%", j.worker, when(j.submitted_at), seconds(j.duration_s), j.error or "")
               for j in page.items),
              ("JOB", "WORKFLOW", "STEP", "ITEM", "TRY", "TYPE", "STATUS", "PROGRESS", "WORKER", "SUBMITTED",
               "TOOK", "ERROR"))
    if page.next_cursor is not None:
        print(f"more: --cursor {page.next_cursor}", file=sys.stderr)
    return EXIT_OK


def cmd_workers(args: argparse.Namespace) -> int:
    with Session(args, catch_up=False) as s:
        WorkersView(s.store)  # creates the table if no backend ever did
        workers = queries.list_workers(s.store, gone_after_s=args.gone_after, include_gone=not args.alive)
    now = datetime.now(UTC)
    if args.json:
        for worker in workers:
            emit_json(worker)
        return EXIT_OK
    table(((w.instance_id, w.job_type, w.label, w.version, w.status, w.activity, w.current_job,
            seconds((now - w.last_seen).total_seconds()) + " ago") for w in workers),
          ("INSTANCE", "JOB TYPE", "LABEL", "VERSION", "STATUS", "ACTIVITY", "JOB", "LAST SEEN"))
    return EXIT_OK


def cmd_stats(args: argparse.Namespace) -> int:
    with Session(args) as s:
        stats = queries.job_stats(s.store, job_type=args.job_type)
    if args.json:
        for row in stats:
            emit_json(row)
        return EXIT_OK
    table(((r.job_type, r.submitted, r.completed, r.ended - r.completed, r.retries,
            "" if r.success_rate is None else f"{100 * r.success_rate:.1f}%", seconds(r.duration_mean_s),
            seconds(r.duration_p50_s), seconds(r.duration_p95_s), seconds(r.duration_max_s)) for r in stats),
          ("JOB TYPE", "SUBMITTED", "COMPLETED", "FAILED", "RETRIES", "SUCCESS", "MEAN", "P50", "P95", "MAX"))
    return EXIT_OK
