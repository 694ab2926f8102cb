"""`stepflow serve`: the backend against RabbitMQ, until SIGTERM or SIGINT.

    stepflow serve --amqp-url amqp://user:pass@rabbit:5672/ --store postgresql://... [--prefix p_]

Consumes responses, unroutable orders and worker announcements; stores their events in
batches and acks them after the commit; publishes job orders from stored events (outbox).
Every flag has its `STEPFLOW_*` variable (`stepflow config` lists them). Exit 0 on a clean
shutdown, 4 when the broker or the store cannot be reached at start or the `--http` port is
taken (checked before the backend starts), 1 when a backend loop died (a supervisor restarts
it; nothing is lost: unacked messages are redelivered and the outbox resumes from its tracked
position). A failure to start is one `stepflow: ...` line on stderr, like every command's;
once serving, what happens is logged.

    --http HOST:PORT [--definitions PATH ...]   also serve the HTTP API, web view and /metrics
    --embedded [--workers MODULE:ATTR ...]      in-process broker and workers instead of RabbitMQ
(see `stepflow.adapters.http`; tokens come from $STEPFLOW_HTTP_TOKENS; exit 2 on a bad setting).
The parts are wired by `stepflow.bootstrap`; this module owns the process: logs, signals, exit.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import Sequence
from pathlib import Path

import structlog

from stepflow import bootstrap
from stepflow.adapters.cli import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, common, loop
from stepflow.adapters.cli.errors import Unavailable, probe_broker, quiet_broker_logs, say
from stepflow.adapters.cli.options import add_settings, service_logging
from stepflow.adapters.cli.shutdown import stop_signals, watch
from stepflow.adapters.persistence import StoreUnavailable
from stepflow.adapters.workers_loading import load_workers
from stepflow.sdk import Worker
from stepflow.settings import Settings, redact_text, redact_url

log = structlog.get_logger("stepflow.serve")

SERVE_SETTINGS = ("amqp_url", "prefix", "batch_size", "prefetch", "outbox_poll", "timeout_check", "max_body",
                  "projections", "http", "definitions", "http_tokens_file")


DESCRIPTION = """Run the backend until SIGTERM or SIGINT: consume the workers' answers and
announcements from RabbitMQ, store them as events (in batches, acked after the commit), and
publish job orders from the stored events (the outbox). With --http also the HTTP API, the web
view and /metrics; with --embedded an in-process broker and workers instead of RabbitMQ. Exit 0
on a clean stop, 1 when a part died, 2 on a bad setting, 4 when the broker or store is
unreachable or the HTTP port is taken."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = common(sub.add_parser("serve", help="run the backend against RabbitMQ until SIGTERM/SIGINT",
                                   description=DESCRIPTION))
    add_settings(parser, *SERVE_SETTINGS)
    parser.add_argument("--embedded", action="store_true",
                        help="no RabbitMQ: in-process broker and workers in this process (--workers, or "
                             "each workers.py beside a --definitions file)")
    parser.add_argument("--workers", action="append", default=[], metavar="MODULE:ATTR",
                        help="with --embedded: worker(s) to run here (module or file.py, ':' and the Worker)")
    parser.set_defaults(func=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    service_logging(args.settings)
    return loop.run(serve(args.settings, embedded=args.embedded, worker_specs=args.workers))


async def serve(settings: Settings, *, embedded: bool = False, worker_specs: list[str] | None = None) -> int:
    """Serve until a signal; the exit code (0, 1 a part died, 2 a bad setting, 4 unreachable)."""
    store = settings.store
    try:
        engine = await bootstrap.open_store(settings)
    except StoreUnavailable as error:
        say(str(error))
        return EXIT_UNREACHABLE
    except Exception as error:  # noqa: BLE001  a store we cannot open: say which, without its password
        say(f"store unreachable: {redact_url(store)}: {redact_text(repr(error), store)}")
        return EXIT_UNREACHABLE
    try:
        workers = embedded_workers(worker_specs or [], settings.definitions) if embedded else []
        runtime = bootstrap.build_runtime(settings, engine, workers, embedded=embedded,
                                          projections=settings.projections, log_workers=not embedded)
        http = bootstrap.http_service(settings, engine, runtime)
    except (ValueError, TypeError, ImportError, AttributeError, OSError) as error:  # tokens, address, files, workers
        say(f"bad setting: {error}")
        engine.close()
        return EXIT_USAGE
    if http is not None:
        problem = port_taken(http.host, http.port)
        if problem is not None:  # before anything starts: no backend to stop, nothing consumed
            say(f"cannot serve HTTP at {settings.http}: {problem}")
            engine.close()
            return EXIT_UNREACHABLE
    where = {"broker": "in-process"} if embedded else {"amqp": redact_url(settings.amqp_url)}
    try:
        if not embedded:
            await probe_broker(settings.amqp_url)
        with quiet_broker_logs():
            await runtime.open()
    except Unavailable as error:
        say(str(error))
        engine.close()
        return EXIT_UNREACHABLE
    except Exception as error:  # noqa: BLE001  the broker (or the store's first read) is not there
        broker = "the in-process broker" if embedded else f"RabbitMQ at {redact_url(settings.amqp_url)}"
        say(f"cannot start against {broker} and store {redact_url(store)}: "
            f"{redact_text(str(error) or repr(error), settings.amqp_url, store)}")
        engine.close()
        return EXIT_UNREACHABLE
    log.info("serving", **where, store=redact_url(store), prefix=settings.prefix,
             workers=[w.label for w in workers])
    code = EXIT_OK
    try:
        async with stop_signals() as stop:
            if http is not None:
                await http.start(runtime.backend)

            def check() -> None:
                runtime.check()
                if http is not None:
                    http.check()

            await watch(stop, check)
    except Exception as error:  # noqa: BLE001  a loop died or the port was taken: log it, shut down, exit 1
        log.error("backend_failed", error=repr(error))
        code = EXIT_FAILED
    finally:
        if http is not None:
            await http.stop()
        await runtime.close()
        engine.close()
    log.info("stopped", **runtime.backend.stats)
    return code


def port_taken(host: str, port: int) -> str | None:
    """Why `host:port` cannot be listened on now (taken, not this machine's, not allowed), or None.

    The HTTP server binds once the backend runs; a taken port found only then meant a backend
    started (and consumed) for nothing, then exit 1. Port 0 (any free port) is always free.
    """
    if port == 0:
        return None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
            probe.bind(address)
    except OSError as error:
        return error.strerror or str(error)
    return None


def embedded_workers(specs: list[str], definitions: Sequence[str]) -> list[Worker]:
    """The named workers; with none, those of each workers.py beside a served definition, as
    `stepflow run` finds them (an embedded server with no worker fails every job: unroutable)."""
    if specs:
        return load_workers(specs, Path("."))
    found: list[Worker] = []
    for entry in definitions:
        path = Path(entry)
        for worker in load_workers([], (path if path.is_dir() else path.parent) / "workflow.toml"):
            if worker not in found:
                found.append(worker)
    return found
