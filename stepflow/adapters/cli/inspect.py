"""Read commands: workflows, show, jobs, workers, stats, history, replay, audit; project, rebuild.

Every read command takes `--json` (JSON lines for lists and timelines, one JSON document
for `show` and `replay`) and the common `--store`. Commands reading views (workflows,
show, stats) first bring the views up to date in this process (`--no-catch-up` reads them
as they are, e.g. when a `stepflow project` process or the backend keeps them current).
A workflow id may be shortened to a unique prefix (as printed by `stepflow workflows`).

Exit codes (see `stepflow.adapters.cli`): 0 ok; 1 `replay` found the read model and the
aggregate disagree, or `replay --check` found a non-deterministic decision; 2 bad usage,
unknown or ambiguous id; 4 store unreachable.

`stepflow project` follows the log and keeps the views current until interrupted (polling
SQLite every `--poll-interval` s, LISTEN on PostgreSQL); `stepflow rebuild [VIEW...]`
drops views and replays the whole log into them, with a progress bar on stderr.
"""

from __future__ import annotations

import argparse
import functools
import re
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO
from uuid import UUID

import msgspec
import structlog
from eventsourcing.persistence import PersistenceError

from stepflow.adapters.cli import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, common
from stepflow.adapters.persistence import open_engine
from stepflow.engine.statuses import JOB_STATUSES, WORKFLOW_STATUSES
from stepflow.projections import ProjectionRunner, WorkersView, queries
from stepflow.projections.history import AUDIT_KINDS, AuditEntry, audit, timeline
from stepflow.projections.models import WorkflowDetail
from stepflow.projections.replay import ReplayError, check_determinism, replay
from stepflow.projections.store import ViewStore

log = structlog.get_logger("stepflow.cli")
_encoder = msgspec.json.Encoder()


class UsageError(Exception):
    """Bad input from the user: exit 2 with the message."""


# --- shared plumbing (also used by `control`) -----------------------------------------


def guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Map usage errors to exit 2 and an unreachable store to exit 4, message on stderr."""

    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except UsageError as error:
            print(f"stepflow: {error}", file=sys.stderr)
            return EXIT_USAGE
        except (PersistenceError, ConnectionError) as error:
            print(f"stepflow: store unreachable: {error}", file=sys.stderr)
            return EXIT_UNREACHABLE
        except Exception as error:
            if _unreachable(error):
                print(f"stepflow: store unreachable: {error}", file=sys.stderr)
                return EXIT_UNREACHABLE
            raise

    return wrapper


def _unreachable(error: Exception) -> bool:
    if isinstance(error, sqlite3.OperationalError):
        text = str(error)
        return any(s in text for s in ("unable to open", "locked", "disk I/O", "readonly"))
    return type(error).__module__.startswith("psycopg") and type(error).__name__ in (
        "OperationalError", "InterfaceError", "PoolTimeout", "ConnectionTimeout")


class Session:
    """An engine and the views beside it, for one command."""

    def __init__(self, args: argparse.Namespace, catch_up: bool = True) -> None:
        self.engine = open_engine(args.store)
        self.runner = ProjectionRunner(self.engine)
        self.store: ViewStore = self.runner.store
        if catch_up and not getattr(args, "no_catch_up", False):
            start = min(self.runner.positions().values(), default=0)
            behind = self.engine.max_notification_id() - start
            bar = ProgressBar("catching up", start=start) if behind > 50_000 and sys.stderr.isatty() else None
            self.runner.run_once(on_progress=bar)
            if bar:
                bar.close()

    def close(self) -> None:
        self.runner.close()
        self.engine.close()

    def __enter__(self) -> Session:  # noqa: PYI034 (final in practice)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def workflow_id(self, text: str) -> UUID:
        """A full id, or a unique prefix of one known to the workflow view."""
        try:
            return UUID(text)
        except ValueError:
            pass
        if len(text) < 4 or not re.fullmatch(r"[0-9a-fA-F-]+", text):
            raise UsageError(f"not a workflow id: {text!r}")
        found = queries.find_workflow_ids(self.store, text)
        if not found and self.runner.run_once():  # the views may lag: catch up and look again
            found = queries.find_workflow_ids(self.store, text)
        if not found:
            raise UsageError(f"unknown workflow {text!r}")
        if len(found) > 1:
            raise UsageError(f"ambiguous workflow id {text!r}: {', '.join(found[:5])}")
        return UUID(found[0])

    def job_id(self, text: str) -> str:
        """A full job id, or a unique prefix of one known to the job view."""
        if len(text) < 4 or not re.fullmatch(r"[0-9a-fA-F-]+", text):
            raise UsageError(f"not a job id: {text!r}")
        found = queries.find_job_ids(self.store, text)
        if not found and self.runner.run_once():
            found = queries.find_job_ids(self.store, text)
        if text in found:
            return text
        if not found:
            raise UsageError(f"unknown job {text!r}")
        if len(found) > 1:
            raise UsageError(f"ambiguous job id {text!r}: {', '.join(found[:5])}")
        return found[0]

    def exists(self, workflow_id: UUID) -> bool:
        return bool(self.engine.recorder.select_events(workflow_id, limit=1))


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


# --- registration ---------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    def reader(name: str, help: str, func: Callable[[argparse.Namespace], int],
               views: bool = True) -> argparse.ArgumentParser:
        parser = common(sub.add_parser(name, help=help, description=help))
        parser.add_argument("--json", action="store_true", help="machine-readable output")
        if views:
            parser.add_argument("--no-catch-up", action="store_true",
                                help="read the views as they are, without applying new events first")
        parser.set_defaults(func=guarded(func))
        return parser

    p = reader("workflows", "list workflows, newest first", cmd_workflows)
    p.add_argument("--status", action="append", help=f"{', '.join(WORKFLOW_STATUSES)} (repeatable)")
    p.add_argument("--definition", help="definition identifier")
    p.add_argument("--label", help="a workflow label or definition tag")
    p.add_argument("--since", type=parse_time, help="started at or after (ISO 8601 or 2h, 7d...)")
    p.add_argument("--until", type=parse_time, help="started before")
    p.add_argument("--limit", type=int, default=50, help="page size (default 50)")
    p.add_argument("--cursor", help="continue after a previous page")
    p.add_argument("--all", action="store_true", help="every page")
    p.add_argument("--oldest-first", action="store_true")

    p = reader("show", "one workflow: its steps and their jobs", cmd_show)
    p.add_argument("workflow_id")

    p = reader("jobs", "list jobs (every attempt), newest first", cmd_jobs)
    p.add_argument("--status", action="append", help=f"{', '.join(JOB_STATUSES)} (repeatable)")
    p.add_argument("--job-type")
    p.add_argument("--workflow", help="only this workflow's jobs")
    p.add_argument("--limit", type=int, default=50, help="page size (default 50)")
    p.add_argument("--cursor", help="continue after a previous page")

    p = reader("workers", "workers known from their announcements", cmd_workers, views=False)
    p.add_argument("--alive", action="store_true", help="only workers heard of within the timeout")
    p.add_argument("--gone-after", type=float, default=90.0, metavar="S", help="silence before 'gone' (90 s)")

    p = reader("stats", "per job type: outcomes, success rate, durations", cmd_stats)
    p.add_argument("--job-type")

    p = reader("history", "the event timeline of a workflow", cmd_history, views=False)
    p.add_argument("workflow_id")

    p = reader("replay", "a workflow as it was at a version or time; or the determinism check", cmd_replay)
    p.add_argument("workflow_id", nargs="*", help="one id (or, with --check, ids to check; default all)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--at", type=int, metavar="N", help="after its first N events")
    group.add_argument("--until", type=parse_time, metavar="TIME", help="as it was at that time")
    group.add_argument("--check", action="store_true",
                       help="re-decide every stored workflow and report decisions that differ")

    p = reader("audit", "export the event log with who and what caused each event", cmd_audit, views=False)
    p.add_argument("--since", type=parse_time, help="events at or after (ISO 8601 or 2h, 7d...)")
    p.add_argument("--until", type=parse_time, help="events before")
    p.add_argument("--after", type=int, default=0, metavar="ID", help="resume after this notification id")
    p.add_argument("--actor", help="only events issued by this actor")
    p.add_argument("--workflow", help="only this workflow")
    p.add_argument("--kind", choices=sorted(AUDIT_KINDS),
                   help="only inbound messages quarantined (with their kind and reason), late answers, "
                        "crash-loop suspects, or refused actions")

    p = common(sub.add_parser("project", help="keep the views up to date (long-running)"))
    p.add_argument("--once", action="store_true", help="catch up and exit")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--poll-interval", type=float, default=0.5, metavar="S",
                   help="SQLite: seconds between polls when idle (PostgreSQL listens instead)")
    p.set_defaults(func=guarded(cmd_project))

    p = common(sub.add_parser("rebuild", help="drop views and rebuild them from the event log"))
    p.add_argument("views", nargs="*", help="workflows, job_stats (default: all)")
    p.add_argument("--batch-size", type=int, default=50_000)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=guarded(cmd_rebuild))


# --- commands ---------------------------------------------------------------------------


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


def render_detail(detail: WorkflowDetail, out: TextIO) -> None:
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


def cmd_history(args: argparse.Namespace) -> int:
    with Session(args, catch_up=False) as s:
        workflow_id = s.workflow_id(args.workflow_id)
        events = s.engine.history(workflow_id)
    if not events:
        raise UsageError(f"unknown workflow {args.workflow_id}")
    entries = timeline(events)
    if args.json:
        for entry in entries:
            emit_json(entry)
        return EXIT_OK
    table(((e.version, when(e.time, precise=True), e.event, e.step_id, (e.job_id or "")[:8], e.attempt,
            e.cause, e.actor, e.detail) for e in entries),
          ("V", "TIME", "EVENT", "STEP", "JOB", "TRY", "CAUSE", "ACTOR", "DETAIL"))
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    with Session(args, catch_up=False) as s:
        if args.check:
            ids = [s.workflow_id(text) for text in args.workflow_id] or None
            report = check_determinism(s.engine, ids)
            for divergence in report.divergences:
                if args.json:
                    emit_json(divergence)
                else:
                    print(f"{divergence.workflow_id} after v{divergence.version} {divergence.fact}: "
                          f"{divergence.message}")
            print(f"checked {report.workflows} workflow(s), {report.events} events: "
                  f"{len(report.divergences)} divergence(s)", file=sys.stderr)
            return EXIT_OK if report.ok else EXIT_FAILED
        if len(args.workflow_id) != 1:
            raise UsageError("replay takes one workflow id (or --check)")
        try:
            result = replay(s.engine, s.workflow_id(args.workflow_id[0]), at=args.at, until=args.until)
        except ReplayError as error:
            raise UsageError(str(error)) from None
    if args.json:
        emit_json({"version": result.version, "versions": result.versions, "time": result.time,
                   "view": result.view, "differences": result.differences})
    else:
        print(f"replayed to version {result.version} of {result.versions} ({when(result.time, precise=True)})")
        render_detail(result.view, sys.stdout)
        for difference in result.differences:
            print(f"DIFFERENCE {difference}", file=sys.stderr)
    return EXIT_FAILED if result.differences else EXIT_OK


def cmd_audit(args: argparse.Namespace) -> int:
    with Session(args, catch_up=False) as s:
        workflow = s.workflow_id(args.workflow) if args.workflow else None
        entries = audit(s.engine, since=args.since, until=args.until, after=args.after, actor=args.actor,
                        workflow_id=workflow, kinds=AUDIT_KINDS[args.kind] if args.kind else ())
        if args.json:
            for entry in entries:
                emit_json(entry)
            return EXIT_OK
        if args.kind:
            table(((e.notification_id, when(e.time, precise=True), e.event, e.cause, _what(e)) for e in entries),
                  ("ID", "TIME", "EVENT", "MESSAGE", "WHAT"))
            return EXIT_OK
        table(((e.notification_id, when(e.time, precise=True), e.workflow_id[:8], e.version, e.event,
                e.actor, e.cause) for e in entries),
              ("ID", "TIME", "WORKFLOW", "V", "EVENT", "ACTOR", "CAUSE"))
    return EXIT_OK


def _what(entry: AuditEntry) -> str:
    data = entry.data
    if entry.event == "MessageQuarantined":
        return f"{data.get('kind', 'malformed')} on {data.get('queue')}: {data.get('reason')}"[:160]
    if entry.event == "LateAnswerReceived":
        return (f"{data.get('answer')} for job {str(data.get('job_id'))[:8]} of workflow {entry.workflow_id[:8]}, "
                f"which was {data.get('job_status')}")
    if entry.event == "ActionRefused":
        return f"{entry.actor} {data.get('action')}: {data.get('reason')}"[:160]
    return f"{data.get('queue', '')}"


def cmd_project(args: argparse.Namespace) -> int:
    engine = open_engine(args.store)
    runner = ProjectionRunner(engine, batch_size=args.batch_size, poll_interval=args.poll_interval)
    try:
        log.info("projections_starting", positions=runner.positions(), end=engine.max_notification_id())
        read = runner.run_once()
        log.info("projections_caught_up", events=read, positions=runner.positions())
        if args.once:
            return EXIT_OK
        stopping = []
        previous = signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
        runner.start()
        try:
            while not stopping:
                time.sleep(0.2)
        finally:
            signal.signal(signal.SIGTERM, previous)
        return EXIT_OK
    finally:
        runner.close()
        engine.close()
        log.info("projections_stopped")


def cmd_rebuild(args: argparse.Namespace) -> int:
    engine = open_engine(args.store)
    runner = ProjectionRunner(engine)
    try:
        unknown = set(args.views) - set(runner.names)
        if unknown:
            raise UsageError(f"unknown view(s) {', '.join(sorted(unknown))}; views: {', '.join(runner.names)}")
        bar = None if args.quiet else ProgressBar("rebuilding")
        started = time.perf_counter()
        read = runner.rebuild(args.views or None, batch_size=args.batch_size, on_progress=bar)
        if bar:
            bar.close()
        elapsed = time.perf_counter() - started
        print(f"rebuilt {', '.join(args.views or runner.names)}: {read:,} events in {elapsed:.1f}s "
              f"({read / max(elapsed, 1e-9):,.0f} events/s)", file=sys.stderr)
        return EXIT_OK
    finally:
        runner.close()
        engine.close()
