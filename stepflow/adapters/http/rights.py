"""Who may do what: authentication of a request, per-definition rights, audit of refusals.

A definition's `rights` maps an action to the user groups allowed to take it, as in the
original Step Flow:

    view    list and read its workflows (details, history, live updates, their jobs)
    create  start a workflow of it
    retry   retry a job                      abort   stop a workflow
    delete  delete a workflow                update  pause or resume a workflow

An action with no entry (or an empty list) is open to every authenticated user; members of
the admin group (`STEPFLOW_HTTP_ADMIN_GROUP`, default `admin`) may always. A workflow is
judged by the rights of the definition it was started with (kept in its first event), so
editing a definition file never changes who may touch workflows already running.

Workers belong to no definition, so controlling them (status, pause, resume, stop: `POST
/api/workers/{instance_id}/{action}`) is the `workers` right, held by the members of the
group `workers` (`WORKERS_GROUP`) and of the admin group.

A refusal is a 403 and an `ActionRefused` event (who, which groups, what, on which
definition and workflow, which request) in the audit log (`stepflow audit`, `GET /api/audit`).
Listings simply leave out what the user may not view (`hidden` counts them), unrecorded.
"""

from __future__ import annotations

from starlette.requests import Request

from stepflow.adapters.http.auth import Principal
from stepflow.adapters.http.errors import ApiError
from stepflow.adapters.http.services import Services
from stepflow.engine.definitions import ACTIONS, WorkflowDefinition

WORKERS_GROUP = "workers"


def authenticate(request: Request, services: Services) -> Principal:
    principal = services.auth.authenticate(request.headers.get("authorization"))
    if principal is None:
        raise ApiError(401, "a valid bearer token is required (Authorization: Bearer TOKEN)",
                       headers={"WWW-Authenticate": 'Bearer realm="stepflow"'})
    return principal


def allowed(principal: Principal, definition: WorkflowDefinition, action: str) -> bool:
    if principal.admin:
        return True
    groups = definition.rights.get(action, ())  # type: ignore[call-overload]
    return not groups or bool(set(groups) & set(principal.groups))


def can(principal: Principal, definition: WorkflowDefinition) -> tuple[str, ...]:
    return tuple(action for action in ACTIONS if allowed(principal, definition, action))


async def require(request: Request, services: Services, principal: Principal, action: str,
                  definition: WorkflowDefinition, workflow_id: str | None = None) -> None:
    """Pass, or record the refusal and raise a 403."""
    if allowed(principal, definition, action):
        return
    needed = ", ".join(definition.rights.get(action, ()))  # type: ignore[call-overload]
    await services.record_refused(
        actor=principal.user, action=action, groups=principal.groups, definition=definition.identifier,
        workflow_id=workflow_id, request=f"{request.method} {request.url.path}",
        reason=f"needs one of the groups: {needed}",
    )
    raise ApiError(403, f"user {principal.user!r} may not {action} workflows of {definition.identifier!r} "
                        f"(needs one of the groups: {needed})")


async def require_admin(request: Request, services: Services, principal: Principal, action: str) -> None:
    if principal.admin:
        return
    await services.record_refused(actor=principal.user, action=action, groups=principal.groups,
                                  request=f"{request.method} {request.url.path}", reason="admins only")
    raise ApiError(403, f"user {principal.user!r} may not {action}: admins only")


def may_control_workers(principal: Principal) -> bool:
    return principal.admin or WORKERS_GROUP in principal.groups


async def require_workers(request: Request, services: Services, principal: Principal, action: str) -> None:
    """Pass if the user holds the `workers` right, or record the refusal and raise a 403."""
    if may_control_workers(principal):
        return
    reason = f"needs the workers right (group {WORKERS_GROUP!r} or admin)"
    await services.record_refused(actor=principal.user, action=f"{action} workers", groups=principal.groups,
                                  request=f"{request.method} {request.url.path}", reason=reason)
    raise ApiError(403, f"user {principal.user!r} may not {action} workers: {reason}")
