"""`stepflow serve`: the backend against RabbitMQ, until SIGTERM or SIGINT.

    stepflow serve --amqp-url amqp://user:pass@rabbit:5672/ --store postgresql://... [--prefix p_]

Consumes responses, unroutable orders and worker announcements; stores their events in
batches and acks them after the commit; publishes job orders from stored events (outbox).
Settings fall back on $STEPFLOW_AMQP_URL, $STEPFLOW_STORE and $STEPFLOW_PREFIX. Exit 0 on a
clean shutdown, 4 when the broker or the store cannot be reached at start, 1 when a backend
loop died (a supervisor restarts it; nothing is lost: unacked messages are redelivered and
the outbox resumes from its tracked position).

    --http HOST:PORT [--definitions PATH ...]   also serve the HTTP API, web view and /metrics
    --embedded [--workers MODULE:ATTR ...]      in-process broker and workers instead of RabbitMQ
(see `stepflow.adapters.http`; tokens come from $STEPFLOW_HTTP_TOKENS; exit 2 on a bad setting).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from datetime import datetime
from typing import Any

import structlog

from stepflow.adapters import protocol as p
from stepflow.adapters.amqp.connection import amqp_url, mask_url
from stepflow.adapters.cli import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, common
from stepflow.adapters.logging import configure
from stepflow.adapters.persistence import describe, store_url

log = structlog.get_logger("stepflow.serve")


def add_amqp_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--amqp-url", default=None,
                        help="RabbitMQ URL (default $STEPFLOW_AMQP_URL or amqp://guest:guest@127.0.0.1:5672/)")
    parser.add_argument("--prefix", default=None,
                        help="prefix of every exchange and queue name, so installations can share a broker "
                             "(default $STEPFLOW_PREFIX or none)")


def prefix_of(args: argparse.Namespace) -> str:
    explicit = getattr(args, "prefix", None)
    return explicit if explicit is not None else os.environ.get("STEPFLOW_PREFIX", "")


def service_logging(args: argparse.Namespace) -> None:
    """A service logs at info unless told otherwise (the CLI's default is warning)."""
    if getattr(args, "log_level", None) is None:
        configure(getattr(args, "log_format", None), os.environ.get("STEPFLOW_LOG_LEVEL", "info"))


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = common(sub.add_parser("serve", help="run the backend against RabbitMQ until SIGTERM/SIGINT"))
    add_amqp_options(parser)
    parser.add_argument("--batch-size", type=int, default=256, help="most inbound messages per transaction")
    parser.add_argument("--prefetch", type=int, default=512, help="unacked inbound messages held at once")
    parser.add_argument("--outbox-poll", type=float, default=0.5,
                        help="seconds between looks at the event log for orders stored by other processes")
    parser.add_argument("--max-body", type=int, default=None,
                        help="inbound bodies over this many bytes are quarantined undecoded "
                             f"(default $STEPFLOW_MAX_BODY or {p.MAX_BODY_BYTES})")
    parser.add_argument("--no-projections", action="store_true",
                        help="do not keep the read models here (run `stepflow project` elsewhere)")
    parser.add_argument("--http", metavar="HOST:PORT", default=None,
                        help="also serve the HTTP API and web view here (PORT 0: any free port)")
    parser.add_argument("--definitions", action="append", default=[], metavar="PATH",
                        help="definition file or directory the HTTP API may start (repeatable; "
                             "also $STEPFLOW_DEFINITIONS)")
    parser.add_argument("--embedded", action="store_true",
                        help="no RabbitMQ: in-process broker, workers from --workers, in this process")
    parser.add_argument("--workers", action="append", default=[], metavar="MODULE:ATTR",
                        help="with --embedded: worker(s) to run here (module or file.py, ':' and the Worker)")
    parser.set_defaults(func=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    service_logging(args)
    if args.embedded:
        from stepflow.adapters.http.server import serve_embedded

        return asyncio.run(serve_embedded(store_url(args.store), args.workers, args.http,
                                          definitions=args.definitions))
    return asyncio.run(serve(
        amqp_url(args.amqp_url), store_url(args.store), prefix_of(args),
        batch_size=args.batch_size, prefetch=args.prefetch, outbox_poll_s=args.outbox_poll,
        projections=not args.no_projections,
        max_body=args.max_body or int(os.environ.get("STEPFLOW_MAX_BODY") or p.MAX_BODY_BYTES),
        http=args.http, definitions=args.definitions,
    ))


async def serve(url: str, store: str, prefix: str = "", *, batch_size: int = 256, prefetch: int = 512,
                outbox_poll_s: float = 0.5, projections: bool = True, max_body: int = p.MAX_BODY_BYTES,
                http: str | None = None, definitions: list[str] | None = None) -> int:
    from stepflow.adapters.amqp import AmqpBackendBroker
    from stepflow.adapters.backend import default_backend
    from stepflow.adapters.persistence import despite_ddl_race, open_engine

    try:
        engine = await despite_ddl_race(lambda: open_engine(store))
    except Exception as error:  # noqa: BLE001  a store we cannot open: say which, without its password
        log.error("store_unreachable", store=describe(store), error=_safe(error, store))
        return EXIT_UNREACHABLE
    from stepflow.adapters.read_side import ReadSide

    broker = AmqpBackendBroker(url, prefix=prefix, prefetch=prefetch)
    read_side = await despite_ddl_race(lambda: ReadSide(engine)) if projections else None
    http_service = None
    if http:
        from stepflow.adapters.http.server import HttpService

        try:
            http_service = HttpService(engine, http, definitions=definitions or (),
                                       runner=read_side.runner if read_side is not None else None)
        except ValueError as error:  # address, tokens or a definition file refused
            log.error("bad_http_settings", error=str(error))
            engine.close()
            return EXIT_USAGE
    backend = default_backend(engine, broker, batch_size=batch_size, outbox_poll_s=outbox_poll_s, max_body=max_body,
                              on_worker=_worker_logger(read_side),
                              after_store=read_side.wake if read_side is not None else None)
    if read_side is not None:
        read_side.start()
    try:
        await backend.start()
    except Exception as error:  # noqa: BLE001  the broker (or the store's first read) is not there
        log.error("start_failed", amqp=mask_url(url), store=describe(store),
                  error=_safe(_safe(error, url), store))
        await backend.stop()
        if read_side is not None:
            read_side.stop()
        engine.close()
        return EXIT_UNREACHABLE
    log.info("serving", amqp=mask_url(url), store=describe(store), prefix=prefix)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    code = EXIT_OK
    try:
        if http_service is not None:
            await http_service.start(backend)
        while not stop.is_set():
            backend.check()
            if http_service is not None:
                http_service.check()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    except Exception as error:  # noqa: BLE001  a loop died: log it, shut down, exit 1
        log.error("backend_failed", error=repr(error))
        code = EXIT_FAILED
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if http_service is not None:
            await http_service.stop()
        await backend.stop()
        if read_side is not None:
            read_side.stop()
        engine.close()
    log.info("stopped", **backend.stats)
    return code


def _worker_logger(read_side: Any = None) -> Any:
    known: set[str] = set()

    def on_worker(message: p.WorkerDiscovery | p.WorkerStatus, at: datetime) -> None:
        if read_side is not None:
            read_side.on_worker(message, at)
        if isinstance(message, p.WorkerDiscovery):
            if message.activity == "Terminated":
                known.discard(message.instance_id)
                log.info("worker_terminated", instance_id=message.instance_id)
            elif message.instance_id not in known:
                known.add(message.instance_id)
                log.info("worker_discovered", instance_id=message.instance_id, job_types=message.job_types,
                         version=message.version, host=message.host)

    return on_worker


def _safe(error: BaseException | str, url: str) -> str:
    """An error's text with the URL's password (if any) masked."""
    text = error if isinstance(error, str) else repr(error)
    from urllib.parse import urlparse

    password = urlparse(url).password
    return text.replace(password, "***") if password else text
