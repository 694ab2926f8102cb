"""The one place that turns `Settings` into running parts (cosmicpython's bootstrap.py).

`stepflow serve` (over RabbitMQ or `--embedded`), `stepflow run` (in-process or
`--amqp-url`) and a service embedding the engine all need the same parts: the event store,
a broker, the `Backend` with its options, the read side, the HTTP service, in-process
workers. Each command used to wire them itself, so a setting could mean one thing in
`serve` and another in `run`. Here each part is built once from a `Settings`; the commands
only choose which parts they run and own the process (signals, exit codes, messages).

    settings = load_settings({"store": "sqlite:///x.sqlite"})    # flags, then STEPFLOW_*
    engine = await open_store(settings)
    runtime = build_runtime(settings, engine, workers, embedded=True, projections=True)
    http = http_service(settings, engine, runtime)                # None without settings.http
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import structlog

from stepflow.adapters import protocol as p
from stepflow.adapters.amqp.runtime import AmqpBrokers
from stepflow.adapters.embedded import InProcessBrokers
from stepflow.adapters.http.server import HttpService
from stepflow.adapters.lease import open_lease
from stepflow.adapters.notify.notifications import Notifier
from stepflow.adapters.persistence import (
    StoreUnavailable,
    despite_ddl_race,
    despite_ddl_race_now,
    make_store_dir,
    open_engine,
    store_failure,
)
from stepflow.adapters.read_side import ReadSide
from stepflow.adapters.runtime import Brokers, Runtime
from stepflow.engine.application import WorkflowEngine
from stepflow.sdk import Worker
from stepflow.settings import Settings

log = structlog.get_logger("stepflow.serve")

WorkerListener = Callable[[p.WorkerDiscovery | p.WorkerStatus, datetime], None]


async def open_store(settings: Settings) -> WorkflowEngine:
    """The event store, even when another process is creating the same tables right now; the
    directory of a SQLite file is created (the commands that call this write to the store).

    `StoreUnavailable` when it cannot be opened (no server, database, schema or file), with a
    one-line message naming what is missing: commands report it as it is, without a traceback.
    """
    make_store_dir(settings.store)
    try:
        return await despite_ddl_race(lambda: open_engine(settings.store))
    except Exception as error:
        message = store_failure(error, settings.store)
        if message is None:
            raise
        raise StoreUnavailable(message) from error


def backend_options(settings: Settings) -> dict[str, Any]:
    """`Backend`'s keyword arguments from the settings."""
    return {
        "batch_size": settings.batch_size,
        "outbox_poll_s": settings.outbox_poll,
        "timeout_check_s": settings.timeout_check,
        "max_body": settings.max_body,
        "notifier": Notifier(allowed_hosts=settings.notification_hosts or None),
    }


def brokers(settings: Settings, *, embedded: bool) -> Brokers:
    """The in-process broker, or RabbitMQ at `settings.amqp_url`."""
    if embedded:
        return InProcessBrokers()
    return AmqpBrokers(settings.amqp_url, prefix=settings.prefix, prefetch=settings.prefetch,
                       quorum=settings.quorum_queues)


def build_runtime(settings: Settings, engine: WorkflowEngine, workers: Sequence[Worker] = (), *,
                  embedded: bool, projections: bool, log_workers: bool = False) -> Runtime:
    """A backend on the chosen broker, with the read side if `projections`, and `workers` here.

    `log_workers`: log each worker the first time it announces itself, and when it leaves (what
    an operator of `stepflow serve` wants to see; `run` keeps its terminal for the live view).
    """
    # Backends starting at once on a fresh store race to create the views' tables too.
    read_side = despite_ddl_race_now(lambda: ReadSide(engine)) if projections else None
    options = backend_options(settings)
    if not embedded:
        # A shared broker: one backend per store runs the active parts (stepflow.adapters.lease).
        # An in-process broker is private to this process, so its backend is always active.
        options["lease"] = open_lease(settings.store, channel=getattr(engine.recorder, "channel_name", None))
    if log_workers:
        options["on_worker"] = announced(read_side.on_worker if read_side is not None else None)
    return Runtime(engine, workers, brokers(settings, embedded=embedded), read_side=read_side, **options)


def http_service(settings: Settings, engine: WorkflowEngine, runtime: Runtime) -> HttpService | None:
    """The HTTP API beside the runtime (its views), if `settings.http`; ValueError if unusable."""
    if settings.http is None:
        return None
    runner = runtime.read_side.runner if runtime.read_side is not None else None
    return HttpService(engine, settings.http, settings=settings, runner=runner)


def announced(forward: WorkerListener | None = None) -> WorkerListener:
    """A worker listener that logs arrivals and departures, then hands the message on."""
    known: set[str] = set()

    def on_worker(message: p.WorkerDiscovery | p.WorkerStatus, at: datetime) -> None:
        if forward is not None:
            forward(message, at)
        if isinstance(message, p.WorkerDiscovery):
            if message.activity == "Terminated":
                known.discard(message.instance_id)
                log.info("worker_terminated", instance_id=message.instance_id)
            elif message.instance_id not in known:
                known.add(message.instance_id)
                log.info("worker_discovered", instance_id=message.instance_id, job_types=message.job_types,
                         version=message.version, host=message.host)

    return on_worker
