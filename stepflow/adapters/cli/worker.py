"""`stepflow worker MODULE:ATTR`: run one worker process against RabbitMQ.

    stepflow worker examples/media/workers.py:media --amqp-url amqp://... [--job-type media_probe]

MODULE is a module path or a .py file; ATTR names a `stepflow.adapters.Worker`. With
`--job-type` (repeatable) the process serves only those of the worker's job types, so one
worker module can be deployed as several processes, one per type. SIGTERM or SIGINT stops
taking orders, lets running jobs finish, announces `Terminated` and exits 0; a second
signal cancels running jobs (their orders go back to the queue). Exit 4 when the broker
cannot be reached at start, 2 for a bad MODULE:ATTR or job type.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import structlog

from stepflow.adapters.amqp.connection import amqp_url, mask_url
from stepflow.adapters.cli import EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, common
from stepflow.adapters.cli.serve import add_amqp_options, prefix_of, service_logging
from stepflow.sdk import Worker

log = structlog.get_logger("stepflow.worker.cli")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = common(sub.add_parser("worker", help="run a worker (MODULE:ATTR) against RabbitMQ"))
    parser.add_argument("target", metavar="MODULE:ATTR", help="module path or .py file, ':', the Worker's name")
    add_amqp_options(parser)
    parser.add_argument("--prefetch", type=int, default=None,
                        help="orders held at once, i.e. jobs run concurrently (default: the Worker's)")
    parser.add_argument("--job-type", action="append", default=[], metavar="TYPE",
                        help="serve only this job type of the worker (repeatable)")
    parser.add_argument("--instance-id", default=None, help="this instance's id (default host-pid-random)")
    parser.add_argument("--heartbeat", type=float, default=None, help="seconds between discovery announcements")
    parser.set_defaults(func=worker_command)


def load_worker(target: str) -> Worker:
    from stepflow.adapters.cli.run import _import

    module, sep, attr = target.rpartition(":")
    if not sep or not module or not attr:
        raise ValueError(f"expected MODULE:ATTR, got {target!r}")
    worker = getattr(_import(module), attr, None)
    if not isinstance(worker, Worker):
        raise TypeError(f"{target} is {type(worker).__name__}, not a stepflow Worker")
    return worker


def restrict(worker: Worker, job_types: list[str], *, prefetch: int | None = None,
             instance_id: str | None = None, heartbeat_s: float | None = None) -> Worker:
    """A worker like `worker`, serving only `job_types` (all when empty), with overrides."""
    unknown = [t for t in job_types if t not in worker.handlers]
    if unknown:
        raise ValueError(f"worker {worker.label!r} has no job type {', '.join(unknown)} "
                         f"(it has {', '.join(worker.handlers)})")
    copy = Worker(worker.label, version=worker.version, description=worker.description,
                  prefetch=prefetch or worker.prefetch, heartbeat_s=heartbeat_s or worker.heartbeat_s,
                  instance_id=instance_id)
    copy.handlers = {t: r for t, r in worker.handlers.items() if not job_types or t in job_types}
    return copy


def worker_command(args: argparse.Namespace) -> int:
    service_logging(args)
    try:
        worker = restrict(load_worker(args.target), args.job_type, prefetch=args.prefetch,
                          instance_id=args.instance_id, heartbeat_s=args.heartbeat)
    except (ValueError, TypeError, ImportError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(run_worker(worker, amqp_url(args.amqp_url), prefix_of(args)))


async def run_worker(worker: Worker, url: str, prefix: str = "") -> int:
    from stepflow.adapters.amqp import AmqpWorkerBroker

    broker = AmqpWorkerBroker(url, prefix=prefix, connection_name=f"stepflow-worker[{prefix}]{worker.instance_id}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def on_signal() -> None:
        if stop.is_set() and main is not None:
            main.cancel()  # second signal: cancel running jobs too
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        await worker.run(broker, stop=stop)
    except asyncio.CancelledError:
        return EXIT_OK
    except OSError as error:
        log.error("broker_unreachable", amqp=mask_url(url), error=repr(error).replace(url, mask_url(url)))
        return EXIT_UNREACHABLE
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return EXIT_OK
