"""Keeping the views: `stepflow project` follows the log, `stepflow rebuild` starts over.

`stepflow project` keeps the views current until interrupted (polling SQLite every
`--poll-interval` s, LISTEN on PostgreSQL), for deployments where read commands should not
each catch up on their own; `stepflow rebuild [VIEW...]` drops views and replays the whole
log into them (after a view's code changed, or to check a view against the log), with a
progress bar on stderr.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

import structlog

from stepflow.adapters.cli import EXIT_OK, common
from stepflow.adapters.cli.formatting import ProgressBar
from stepflow.adapters.cli.session import UsageError, guarded, open_existing, store_of
from stepflow.projections import ProjectionRunner

log = structlog.get_logger("stepflow.cli")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = common(sub.add_parser("project", help="keep the views up to date (long-running)", description=(
        "Keep the read models (views) up to date with the event log until SIGTERM or Ctrl-C: for "
        "deployments where read commands and the HTTP API read views kept by one process (see their "
        "--no-catch-up) rather than by the backend (`serve --no-projections`). Polls SQLite, listens "
        "on PostgreSQL.")))
    p.add_argument("--once", action="store_true", help="catch up and exit")
    p.add_argument("--batch-size", type=int, default=1000, metavar="N",
                   help="events read and applied per transaction (default 1000)")
    p.add_argument("--poll-interval", type=float, default=0.5, metavar="S",
                   help="SQLite: seconds between polls when idle (PostgreSQL listens instead)")
    p.set_defaults(func=guarded(cmd_project))

    p = common(sub.add_parser("rebuild", help="drop views and rebuild them from the event log", description=(
        "Drop read models (views) and replay the whole event log into them, with a progress bar on "
        "stderr: after a view's code changed, or to check a view against the log. Stop the processes "
        "keeping the views first.")))
    p.add_argument("views", nargs="*", help="workflows, job_stats (default: all)")
    p.add_argument("--batch-size", type=int, default=50_000, metavar="N",
                   help="events read and applied per transaction (default 50000)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=guarded(cmd_rebuild))


def cmd_project(args: argparse.Namespace) -> int:
    engine = open_existing(store_of(args))
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
    engine = open_existing(store_of(args))
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
