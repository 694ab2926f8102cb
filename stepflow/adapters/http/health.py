"""`/healthz` (the process answers) and `/readyz` (it can do its job now).

Ready means: the store answers (within `STORE_TIMEOUT_S`), the broker connection is up (when
this process runs a backend: an AMQP connection that is not closed, or the in-process
broker), no backend loop has died, and every view is at most `STEPFLOW_READY_MAX_LAG`
events (default 10000) behind the log with its runner not failing. A 503 lists each check.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from stepflow.adapters.http.api_workflows import services_of
from stepflow.adapters.http.errors import json_response
from stepflow.adapters.http.schemas import Health

STORE_TIMEOUT_S = 3.0


def max_lag() -> int:
    try:
        return int(os.environ.get("STEPFLOW_READY_MAX_LAG", "10000"))
    except ValueError:
        return 10000


async def healthz(request: Request) -> Response:
    return json_response(Health(status="ok"))


def broker_state(backend: Any) -> str:
    broker = getattr(backend, "broker", None)
    connected = getattr(broker, "connected", None)
    if isinstance(connected, bool):
        return "ok" if connected else "disconnected"
    if broker is not None and hasattr(broker, "_connection"):  # AMQP: an aio-pika robust connection
        connection = broker._connection
        return "ok" if connection is not None and not connection.is_closed else "disconnected"
    return "ok"  # in-process broker


async def readyz(request: Request) -> Response:
    s = services_of(request)
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
            checks["projections"] = "ok" if lag <= max_lag() else f"{lag} events behind (bound {max_lag()})"
    ok = all(value == "ok" for value in checks.values())
    return json_response(Health(status="ok" if ok else "unavailable", checks=checks), 200 if ok else 503)
