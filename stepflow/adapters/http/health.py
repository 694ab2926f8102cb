"""`/healthz` (the process answers) and `/readyz` (it can do its job now).

Ready means: the store answers (within `STORE_TIMEOUT_S`), the broker is connected (when
this process runs a backend: the broker port's `connected`, whichever broker it is), no
backend loop has died, and every view is at most `ready_max_lag` events (the settings',
`STEPFLOW_READY_MAX_LAG`, default 10000) behind the log with its runner not failing. A 503
lists each check.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from stepflow.adapters.http.api_workflows import services_of
from stepflow.adapters.http.errors import json_response
from stepflow.adapters.http.schemas import Health

STORE_TIMEOUT_S = 3.0


async def healthz(request: Request) -> Response:
    return json_response(Health(status="ok"))


def broker_state(backend: Any) -> str:
    return "ok" if backend.broker.connected else "disconnected"


async def readyz(request: Request) -> Response:
    s = services_of(request)
    max_lag: int = request.app.state.settings.ready_max_lag
    checks: dict[str, str] = {}
    try:
        position = await asyncio.wait_for(s.read(s.engine.max_notification_id), STORE_TIMEOUT_S)
        checks["store"] = "ok"
    except Exception as error:  # noqa: BLE001  any failure is "not ready", said in the body
        position = None
        checks["store"] = f"unreachable: {type(error).__name__}"
    if s.backend is not None:
        checks["broker"] = broker_state(s.backend)
        try:
            s.backend.check()
            checks["backend"] = "ok"
        except Exception as error:  # noqa: BLE001
            checks["backend"] = f"failed: {error!r}"[:200]
    if s.runner.last_error is not None:
        checks["projections"] = f"failing: {type(s.runner.last_error).__name__}"
    elif position is not None:
        try:
            positions = await asyncio.wait_for(s.read(s.runner.positions), STORE_TIMEOUT_S)
        except Exception as error:  # noqa: BLE001
            checks["projections"] = f"unreadable: {type(error).__name__}"
        else:
            lag = max((position - p for p in positions.values()), default=0)
            checks["projections"] = "ok" if lag <= max_lag else f"{lag} events behind (bound {max_lag})"
    ok = all(value == "ok" for value in checks.values())
    return json_response(Health(status="ok" if ok else "unavailable", checks=checks), 200 if ok else 503)
