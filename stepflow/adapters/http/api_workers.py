"""Worker controls: `POST /api/workers/{instance_id}/{status|pause|resume|stop}`.

The order goes out through the backend running in this process (its broker: RabbitMQ or the
in-process one), so an app without a backend answers 503. The worker must be known to the
workers view (404 otherwise) and not terminated (409). The user needs the `workers` right
(`rights.require_workers`: a refusal is a 403 and an `ActionRefused` event). Each order sent
is recorded as a `WorkerOrdered` event (who, which worker, which order) before the answer,
and the answer waits (briefly) until the views show it: a paused worker lists as `paused`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from stepflow.adapters.http import rights
from stepflow.adapters.http.api_workflows import services_of
from stepflow.adapters.http.errors import ApiError, json_response
from stepflow.adapters.http.schemas import WorkerOrderDone
from stepflow.adapters.worker_control import ACTIONS, ORDERS
from stepflow.projections import queries

MAX_INSTANCE_ID = 200


async def order_worker(request: Request) -> Response:
    s = services_of(request)
    principal = rights.authenticate(request, s)
    instance_id: str = request.path_params["instance_id"]
    action: str = request.path_params["action"]
    if action not in ORDERS:
        raise ApiError(422, f"unknown worker action {action[:40]!r}; one of {', '.join(ACTIONS)}", "path.action")
    if not 1 <= len(instance_id) <= MAX_INSTANCE_ID:
        raise ApiError(422, f"not a worker instance id (1 to {MAX_INSTANCE_ID} characters)", "path.instance_id")
    await rights.require_workers(request, s, principal, action)
    known = {w.instance_id: w for w in await s.read(queries.list_workers, s.store)}
    worker = known.get(instance_id)
    if worker is None:
        raise ApiError(404, f"unknown worker {instance_id!r}", "path.instance_id")
    if worker.status == "terminated":
        raise ApiError(409, f"worker {instance_id!r} has terminated")
    if s.backend is None:
        raise ApiError(503, "no backend in this process to send worker orders through: serve the API with "
                            "`stepflow serve --http` (or `stepflow worker-control` over RabbitMQ)")
    position = await s.order_worker(instance_id, action, actor=principal.user,
                                    request=f"{request.method} {request.url.path}")
    return json_response(WorkerOrderDone(instance_id=instance_id, action=action, order=ORDERS[action],
                                         notification_id=position), 202)
