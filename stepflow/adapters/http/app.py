"""The ASGI app: the JSON API, the web view, `/metrics`, `/healthz`, `/readyz`, `/openapi.json`.

    app = create_app(engine, backend=backend, catalog=DefinitionCatalog.from_paths([...]),
                     auth=TokenAuth.with_tokens({...}), runner=runner, settings=settings)

`runner` is the `ProjectionRunner` keeping the views; without one, the app makes its own and
runs it (in its thread) for the app's lifetime. `backend` (optional) is the running
`Backend`: commands then go through it, and its counters appear in the metrics. Without a
backend the app still reads and records commands, and a separate `stepflow serve` publishes
the orders from the log. `settings` (default: those of the environment) say whether `/metrics`
needs a token and how far behind the views may be for `/readyz`; the handlers find them, and
the OpenAPI document, on `app.state`. Errors are JSON (`ErrorBody`), 404 and 405 included.
"""

from __future__ import annotations

import contextlib
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

from stepflow.adapters.http import openapi, pages
from stepflow.adapters.http.auth import TokenAuth
from stepflow.adapters.http.catalog import DefinitionCatalog
from stepflow.adapters.http.errors import ApiError, error_response
from stepflow.adapters.http.routes import ENDPOINTS
from stepflow.adapters.http.services import Services
from stepflow.engine.application import WorkflowEngine
from stepflow.projections import ProjectionRunner, ViewStore, WorkersView
from stepflow.settings import Settings, load_settings

log = structlog.get_logger("stepflow.http")
STATIC = Path(__file__).parent / "static"


def create_app(engine: WorkflowEngine, *, runner: ProjectionRunner | None = None, store: ViewStore | None = None,
               backend: Any = None, catalog: DefinitionCatalog | None = None,
               auth: TokenAuth | None = None, settings: Settings | None = None) -> Starlette:
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
            await services.queue_depths.close()
            services.close()

    routes: list[Any] = [Route(e.path, e.handler, methods=[e.method]) for e in ENDPOINTS]
    routes += pages.routes()
    routes.append(Mount("/static", StaticFiles(directory=STATIC), name="static"))
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        ApiError: _api_error, HTTPException: _http_error, Exception: _server_error,
    })
    app.state.services = services
    app.state.settings = settings if settings is not None else load_settings()
    app.state.openapi = openapi.document  # built from the route table, which cannot import it back
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
