"""The ASGI app: the JSON API, the web view, `/metrics`, `/healthz`, `/readyz`, `/openapi.json`.

    app = create_app(engine, backend=backend, catalog=DefinitionCatalog.from_paths([...]),
                     auth=TokenAuth.from_env(), runner=runner)

`runner` is the `ProjectionRunner` keeping the views; without one, the app makes its own and
runs it (in its thread) for the app's lifetime. `backend` (optional) is the running
`Backend`: commands then go through it, and its counters appear in the metrics. Without a
backend the app still reads and records commands, and a separate `stepflow serve` publishes
the orders from the log. Errors are JSON (`ErrorBody`), 404 and 405 included.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from stepflow.adapters.http import metrics, pages, rights
from stepflow.adapters.http.auth import TokenAuth
from stepflow.adapters.http.catalog import DefinitionCatalog
from stepflow.adapters.http.errors import ApiError, error_response
from stepflow.adapters.http.routes import ENDPOINTS
from stepflow.adapters.http.services import Services
from stepflow.engine.application import WorkflowEngine
from stepflow.projections import ProjectionRunner, ViewStore, WorkersView

log = structlog.get_logger("stepflow.http")
STATIC = Path(__file__).parent / "static"


def create_app(engine: WorkflowEngine, *, runner: ProjectionRunner | None = None, store: ViewStore | None = None,
               backend: Any = None, catalog: DefinitionCatalog | None = None,
               auth: TokenAuth | None = None) -> Starlette:
    own_runner = runner is None
    if runner is None:
        runner = ProjectionRunner(engine, store)
    services = Services(engine, runner, backend=backend, catalog=catalog, auth=auth, own_runner=own_runner)
    WorkersView(runner.store)  # the workers table exists even if no backend ever wrote to it

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if own_runner:
            runner.start()
        log.info("http_app_started", auth=services.auth.enabled, definitions=len(services.catalog))
        try:
            yield
        finally:
            if own_runner:
                runner.close()
            services.close()

    routes: list[Any] = [Route(e.path, e.handler, methods=[e.method]) for e in ENDPOINTS]
    routes += pages.routes()
    routes.append(Mount("/static", StaticFiles(directory=STATIC), name="static"))
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        ApiError: _api_error, HTTPException: _http_error, Exception: _server_error,
    })
    app.state.services = services
    return app


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, exc.field, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: f"no route {request.url.path}", 405: f"{request.method} is not allowed here"}.get(
        exc.status_code, str(exc.detail))
    return error_response(exc.status_code, message, headers=dict(exc.headers or {}))


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("http_error", method=request.method, path=request.url.path)
    return error_response(500, "internal error (logged)")


async def metrics_endpoint(request: Request) -> Response:
    s: Services = request.app.state.services
    if os.environ.get("STEPFLOW_HTTP_PUBLIC_METRICS", "") not in ("1", "true", "yes"):
        rights.authenticate(request, s)
    return Response(await metrics.collect(s), media_type=metrics.CONTENT_TYPE)
