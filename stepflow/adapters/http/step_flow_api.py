"""The HTTP calls an unmodified `mcai-worker-sdk` worker makes at start-up, answered.

The original Step Flow's worker SDK (2.1.1, observed in docs/research/mcai-worker-sdk-2.1.1.md
§3) signs in and asks the backend who it is before it takes a job, relative to its
`BACKEND_HOSTNAME` (`http://HOST:PORT/api`, no trailing slash):

    POST   /api/sessions                  {"session": {"email", "password"}} -> {"access_token"}
    GET    /api/step_flow                 -> {"application", "version"}
    GET    /api/step_flow/blacklist       -> {"data": [job ids], "total"}   (version >= 1.6.0)
    DELETE /api/step_flow/blacklist/{id}  -> {"data": [...], "total"}       (a blacklisted order came)

Any other answer makes the worker panic and exit 1, and it asks again after every broker
reconnection, so these routes keep no state. The SDK sends the access token as the whole
`Authorization` header, without `Bearer `; these routes take both forms.

Credentials are stepflow's own tokens (`stepflow.adapters.http.auth`): `BACKEND_USERNAME` is a
token's user and `BACKEND_PASSWORD` the token. The session's `access_token` is that same token.
Nothing is lost by handing it back (the worker sent it, and holds it in its environment), and
nothing has to be kept: a minted session token would need a table or a signing key shared by
every backend process serving the API, and would outlive a token removed from the settings,
whereas the token itself stops working the moment it is removed. With authentication off
(no tokens, loopback only) every sign-in succeeds, as every request then acts as `anonymous`.

A refused sign-in is a 401 and a `session_refused` warning in the log, not an `ActionRefused`
event: that event records what an authenticated user was refused, and no other 401 is
stored either; storing the sign-ins of unauthenticated callers would let anyone grow the event
store.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
import structlog
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response

import stepflow
from stepflow.adapters.http.auth import Principal
from stepflow.adapters.http.errors import ApiError, decode_body, json_response
from stepflow.adapters.http.services import Services

log = structlog.get_logger("stepflow.http")

STEP_FLOW_API_VERSION = "1.8.0"
"""The Step Flow API level these routes speak, not stepflow's release.

The SDK needs a full semver here (else it panics) and asks for the job blacklist only from
1.6.0 on; 1.8.0 is the level the research ran the SDK against, and an empty blacklist is what
stepflow has to say. stepflow's own release goes under `stepflow_version`, which the SDK
ignores, so that our version numbers never change what the SDK does."""
APPLICATION = "stepflow"
U64_MAX = 2**64 - 1
_ANONYMOUS_SESSION = "anonymous"  # authentication off: any non-empty header will do


class SessionCredentials(msgspec.Struct, frozen=True, kw_only=True):
    """A token's user and the token (the SDK's `BACKEND_USERNAME` and `BACKEND_PASSWORD`)."""

    email: Annotated[str, Meta(max_length=1000)]
    password: Annotated[str, Meta(max_length=1000)]


class SessionRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A sign-in, as the original Step Flow's worker SDK sends it."""

    session: SessionCredentials


class Session(msgspec.Struct, frozen=True, kw_only=True):
    """What to send as `Authorization: TOKEN` (or `Bearer TOKEN`): the token itself (`anonymous`
    when authentication is off)."""

    access_token: str


class StepFlowInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Who answers: `version` is the Step Flow API level spoken, `stepflow_version` stepflow's release."""

    application: str
    version: str
    stepflow_version: str


class Blacklist(msgspec.Struct, frozen=True, kw_only=True):
    """Job ids workers must not run: always none, stepflow blacklists no job."""

    data: tuple[int, ...]
    total: int


_session_request = msgspec.json.Decoder(SessionRequest)
_EMPTY = Blacklist(data=(), total=0)


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def _authenticate(request: Request, services: Services) -> Principal:
    principal = services.auth.authenticate(request.headers.get("authorization"), raw_token=True)
    if principal is None:
        raise ApiError(401, "a valid token is required (Authorization: TOKEN or Authorization: Bearer TOKEN)",
                       headers={"WWW-Authenticate": 'Bearer realm="stepflow"'})
    return principal


async def create_session(request: Request) -> Response:
    s = _services(request)
    credentials = (await decode_body(request, _session_request)).session
    principal = s.auth.session(credentials.email, credentials.password)
    if principal is None:
        log.warning("session_refused", email=credentials.email[:100],
                    client=request.client.host if request.client else None)
        raise ApiError(401, "unknown user or token: sign in with a stepflow token's user as email "
                            "and the token as password", headers={"WWW-Authenticate": 'Bearer realm="stepflow"'})
    log.info("session_granted", user=principal.user)
    token = credentials.password.strip() if s.auth.enabled else _ANONYMOUS_SESSION
    return json_response(Session(access_token=token))


async def step_flow_info(request: Request) -> Response:
    _authenticate(request, _services(request))
    return json_response(StepFlowInfo(application=APPLICATION, version=STEP_FLOW_API_VERSION,
                                      stepflow_version=str(stepflow.__version__)))


async def blacklist(request: Request) -> Response:
    _authenticate(request, _services(request))
    return json_response(_EMPTY)


async def unblacklist_job(request: Request) -> Response:
    _authenticate(request, _services(request))
    job_id: str = request.path_params["job_id"]
    if not (job_id.isascii() and job_id.isdigit() and int(job_id) <= U64_MAX):
        raise ApiError(422, f"not a job id (an integer from 0 to {U64_MAX}): {job_id[:40]!r}", "path.job_id")
    return json_response(_EMPTY)
