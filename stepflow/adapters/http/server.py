"""Serving the HTTP app beside a backend, in the same event loop (`stepflow serve --http`).

    runtime = EmbeddedRuntime(engine, workers, projections=True)   # or any `Runtime`
    http = HttpService(engine, "127.0.0.1:8080", settings=settings, runner=runtime.read_side.runner)
    await runtime.open(); await http.start(runtime.backend)        # uvicorn listens
    ...; await http.stop()

`stepflow.bootstrap.http_service` builds it from the `Settings` for `stepflow serve`.
`HttpService` checks its settings when built (address, tokens: a non-loopback address needs
them, the definition files), so a bad setting stops the command before anything runs. The
views are kept by the `ProjectionRunner` given (the backend's read side); without one the app
only reads views another process keeps (`stepflow project`). The socket is bound before
uvicorn starts, so `PORT` 0 picks a free port and `url` tells which. uvicorn's own signal
handling is off: the command owns SIGTERM/SIGINT (`stepflow.adapters.cli.shutdown`).
"""

from __future__ import annotations

import asyncio
import contextlib
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
from stepflow.settings import Settings, load_settings

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


def token_auth(settings: Settings) -> TokenAuth:
    """The bearer tokens of the settings (`http_tokens` and the file `http_tokens_file`)."""
    return TokenAuth.from_env({  # `from_env` parses any mapping of these names; this one is settled
        "STEPFLOW_HTTP_TOKENS": settings.http_tokens,
        "STEPFLOW_HTTP_TOKENS_FILE": settings.http_tokens_file or "",
        "STEPFLOW_HTTP_ADMIN_GROUP": settings.http_admin_group,
    })


class HttpService:
    def __init__(self, engine: WorkflowEngine, address: str, *, definitions: Iterable[str | Path] = (),
                 auth: TokenAuth | None = None, catalog: DefinitionCatalog | None = None,
                 runner: ProjectionRunner | None = None, settings: Settings | None = None) -> None:
        """Without `settings`, those of the environment; `definitions` add to theirs."""
        self.engine = engine
        self.settings = settings if settings is not None else load_settings()
        self.host, self.port = parse_address(address)
        self.auth = auth if auth is not None else token_auth(self.settings)
        check_binding(self.host, self.auth)
        self.catalog = catalog if catalog is not None else DefinitionCatalog.from_paths(
            [*self.settings.definitions, *definitions])
        self._own_runner = runner is None
        self.runner = runner if runner is not None else ProjectionRunner(engine)
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self, backend: Any = None) -> None:
        app = create_app(self.engine, runner=self.runner, backend=backend, catalog=self.catalog, auth=self.auth,
                         settings=self.settings)
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
