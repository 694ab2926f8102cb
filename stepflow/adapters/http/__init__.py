"""The HTTP side of stepflow: operators' API, web view, metrics, health.

    from stepflow.adapters.http.app import create_app       # needs Starlette (+ uvicorn to serve)
    app = create_app(engine, runner=runner, backend=backend, catalog=catalog, auth=auth)

Modules: `app` (the ASGI app), `routes` (the route table, also the OpenAPI source),
`api_workflows`, `api_misc`, `api_stream` (handlers), `schemas` (msgspec bodies), `errors`,
`openapi`, `auth` (bearer tokens), `rights` (per-definition rights, audited refusals),
`services` (engine, views, backend, threads), `catalog` (stored definitions), `metrics`,
`health`, `pages` + `static/` (the web view), `server` (uvicorn beside the backend,
`stepflow serve --http` / `--embedded`). README.md beside this file is the operator's guide.
The HTTP calls the backend itself makes (notification steps, hooks) are in
`stepflow.adapters.notify`, which does not depend on this package.
"""
