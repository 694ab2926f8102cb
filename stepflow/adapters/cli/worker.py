"""`stepflow worker MODULE:ATTR`: run one worker process against RabbitMQ.

    stepflow worker examples/media/workers.py:media --amqp-url amqp://... [--job-type media_probe]

MODULE is a module path or a .py file; ATTR names a `stepflow.adapters.Worker`. With
`--job-type` (repeatable) the process serves only those of the worker's job types, so one
worker module can be deployed as several processes, one per type. SIGTERM or SIGINT stops
taking orders, lets running jobs finish, announces `Terminated` and exits 0; a second
signal cancels running jobs (their orders go back to the queue). Exit 4 when the broker
cannot be reached at start, 2 for a bad MODULE:ATTR or job type (one `stepflow: ...` line).
"""

from __future__ import annotations

import argparse
import asyncio

import structlog

from stepflow import bootstrap
from stepflow.adapters.cli import EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, common, loop
from stepflow.adapters.cli.errors import Unavailable, probe_broker, say
from stepflow.adapters.cli.options import add_settings, service_logging
from stepflow.adapters.cli.shutdown import stop_signals
from stepflow.adapters.workers_loading import load_worker
from stepflow.sdk import Worker
from stepflow.settings import Settings, redact_text, redact_url

log = structlog.get_logger("stepflow.worker.cli")


DESCRIPTION = """Run one worker process against RabbitMQ: MODULE:ATTR names a stepflow Worker (MODULE
a module path or a .py file). It declares and consumes its job types' queues (all of them, or
those given with --job-type), announces itself on worker_discovery, and answers each order.
SIGTERM or SIGINT lets running jobs finish, then exits 0; a second one cancels them (their
orders go back to the queue). Exit 2 for a bad MODULE:ATTR or job type, 4 when the broker
cannot be reached at start."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = common(sub.add_parser("worker", help="run a worker (MODULE:ATTR) against RabbitMQ",
                                   description=DESCRIPTION))
    parser.add_argument("target", metavar="MODULE:ATTR", help="module path or .py file, ':', the Worker's name")
    add_settings(parser, "amqp_url", "prefix")
    parser.add_argument("--prefetch", type=int, default=None, metavar="N",
                        help="orders held at once, i.e. jobs run concurrently (default: the Worker's)")
    parser.add_argument("--job-type", action="append", default=[], metavar="TYPE",
                        help="serve only this job type of the worker (repeatable)")
    parser.add_argument("--instance-id", default=None, metavar="ID",
                        help="this instance's id in announcements and answers (default host-pid-random)")
    parser.add_argument("--heartbeat", type=float, default=None, metavar="S",
                        help="seconds between discovery announcements (default: the Worker's)")
    parser.add_argument("--answered-file", default=None, metavar="PATH",
                        help="remember answered jobs in this file too, so that after a restart a redelivered "
                             "order is answered from it, not run again (default: in memory only)")
    parser.set_defaults(func=worker_command)


def restrict(worker: Worker, job_types: list[str], *, prefetch: int | None = None,
             instance_id: str | None = None, heartbeat_s: float | None = None,
             answered_file: str | None = None) -> Worker:
    """A worker like `worker`, serving only `job_types` (all when empty), with overrides."""
    unknown = [t for t in job_types if t not in worker.handlers]
    if unknown:
        raise ValueError(f"worker {worker.label!r} has no job type {', '.join(unknown)} "
                         f"(it has {', '.join(worker.handlers)})")
    copy = Worker(worker.label, version=worker.version, description=worker.description,
                  prefetch=prefetch or worker.prefetch, heartbeat_s=heartbeat_s or worker.heartbeat_s,
                  instance_id=instance_id, answered_file=answered_file)
    copy.handlers = {t: r for t, r in worker.handlers.items() if not job_types or t in job_types}
    return copy


def worker_command(args: argparse.Namespace) -> int:
    service_logging(args.settings)
    try:
        worker = restrict(load_worker(args.target), args.job_type, prefetch=args.prefetch,
                          instance_id=args.instance_id, heartbeat_s=args.heartbeat,
                          answered_file=args.answered_file)
    except (ValueError, TypeError, ImportError, AttributeError, OSError, SyntaxError) as error:
        say(f"cannot load worker {args.target}: {error}")
        return EXIT_USAGE
    return loop.run(run_worker(worker, args.settings))


async def run_worker(worker: Worker, settings: Settings) -> int:
    """Until a signal: the first lets running jobs finish, a second cancels them too."""
    broker = bootstrap.brokers(settings, embedded=False).worker(worker)
    main = asyncio.current_task()
    url = settings.amqp_url

    def cancel_jobs() -> None:
        if main is not None:
            main.cancel()  # running jobs are cancelled; their orders go back to the queue

    try:
        await probe_broker(url)
    except Unavailable as error:
        say(str(error))
        return EXIT_UNREACHABLE
    try:
        async with stop_signals(on_second=cancel_jobs) as stop:
            await worker.run(broker, stop=stop)
    except asyncio.CancelledError:
        return EXIT_OK
    except OSError as error:
        say(f"cannot reach RabbitMQ at {redact_url(url)}: {redact_text(str(error) or repr(error), url)}")
        return EXIT_UNREACHABLE
    return EXIT_OK
