"""Serving the HTTP app beside a backend, in the same event loop (`stepflow serve --http`).

    read_side = ReadSide(engine)                           # views follow the log, workers view
    http = HttpService(engine, "127.0.0.1:8080", definitions=["defs/"], runner=read_side.runner)
    backend = Backend(engine, broker, on_worker=read_side.on_worker, after_store=read_side.wake)
    await backend.start(); await http.start(backend)      # uvicorn listens
    ...; await http.stop()

`HttpService` checks its settings when built (address, tokens: a non-loopback address needs
them, the definition files), so a bad setting stops the command before anything runs. The
views are kept by the `ProjectionRunner` given (the backend's read side); without one the app
only reads views another process keeps (`stepflow project`). The socket is bound before
uvicorn starts, so `PORT` 0 picks a free port and `url` tells which. uvicorn's own signal
handling is off: the command owns SIGTERM/SIGINT.

`serve_embedded` is `stepflow serve --embedded`: backend, in-process broker, workers and
the HTTP app in one process, no RabbitMQ (for a laptop, a demo, the browser tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Generator, Iterable
from pathlib import Path
from typing import Any

import structlog
import uvicorn

from stepflow.adapters.http.app import create_app
from stepflow.adapters.http.auth import TokenAuth, check_binding
from stepflow.adapters.http.catalog import DefinitionCatalog
from stepflow.engine.application import WorkflowEngine
from stepflow.projections import ProjectionRunner

log = structlog.get_logger("stepflow.http")


def parse_address(address: str) -> tuple[str, int]:
    """`HOST:PORT`, `[v6]:PORT` or `:PORT` (127.0.0.1)."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"--http expects HOST:PORT, got {address!r}")
    return (host.strip("[]") or "127.0.0.1"), int(port_text)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the command handles signals


class HttpService:
    def __init__(self, engine: WorkflowEngine, address: str, *, definitions: Iterable[str | Path] = (),
                 auth: TokenAuth | None = None, catalog: DefinitionCatalog | None = None,
                 runner: ProjectionRunner | None = None) -> None:
        self.engine = engine
        self.host, self.port = parse_address(address)
        self.auth = auth if auth is not None else TokenAuth.from_env()
        check_binding(self.host, self.auth)
        self.catalog = catalog if catalog is not None else DefinitionCatalog.from_env(definitions)
        self._own_runner = runner is None
        self.runner = runner if runner is not None else ProjectionRunner(engine)
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self, backend: Any = None) -> None:
        app = create_app(self.engine, runner=self.runner, backend=backend, catalog=self.catalog, auth=self.auth)
        family, kind, proto, _, address = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=5)
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="stepflow-http")
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the HTTP server stopped while starting")
            await asyncio.sleep(0.02)
        log.info("http_serving", url=self.url, auth=self.auth.enabled, definitions=len(self.catalog))

    def check(self) -> None:
        """Raise if the server stopped by itself."""
        if self._task is not None and self._task.done():
            self._task.result()
            raise RuntimeError("the HTTP server stopped")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 10)
            self._task = None
        if self._own_runner:
            self.runner.close()


async def serve_embedded(store: str, worker_specs: list[str], address: str | None, *,
                         definitions: Iterable[str | Path] = ()) -> int:
    """`stepflow serve --embedded`: everything in this process until SIGTERM/SIGINT."""
    from stepflow.adapters.cli import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE
    from stepflow.adapters.cli.run import load_workers
    from stepflow.adapters.embedded import EmbeddedRuntime
    from stepflow.adapters.persistence import describe, open_engine

    try:
        engine = open_engine(store)
    except Exception as error:  # noqa: BLE001  say which store, never its password
        log.error("store_unreachable", store=describe(store), error=type(error).__name__)
        return EXIT_UNREACHABLE
    try:
        workers = load_workers(worker_specs, Path(".")) if worker_specs else []
        runtime = EmbeddedRuntime(engine, workers, projections=True)
        assert runtime.read_side is not None
        http = HttpService(engine, address, definitions=definitions,
                           runner=runtime.read_side.runner) if address else None
    except (ValueError, ImportError, AttributeError, OSError) as error:
        log.error("bad_settings", error=str(error))
        engine.close()
        return EXIT_USAGE
    code = EXIT_OK
    async with runtime:
        try:
            if http is not None:
                await http.start(runtime.backend)
            log.info("serving_embedded", store=describe(store), workers=[w.label for w in workers],
                     http=http.url if http else None)
            await _until_signal(runtime.backend, http)
        except Exception as error:  # noqa: BLE001  a loop died or the port was taken: exit 1
            log.error("embedded_failed", error=repr(error))
            code = EXIT_FAILED
        finally:
            if http is not None:
                await http.stop()
    engine.close()
    return code


async def _until_signal(backend: Any, http: HttpService | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        while not stop.is_set():
            backend.check()
            if http is not None:
                http.check()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
