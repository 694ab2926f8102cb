"""HTTP calls the backend makes itself: notification steps and workflow hooks.

A notification step's job is an ordinary stored `JobSubmitted` (mode "notification") whose
parameters are the rendered request (`method`, `url`, `headers`, `body`). The outbox hands
the event here instead of to the broker; the `Notifier` waits its backoff delay, makes the call
off the event loop (stdlib `urllib` in a thread, at most `max_concurrency` at once) and
feeds the outcome back as a `RecordCompleted` / `RecordError` command, so retries follow the
step's policy. The command's cause is `notification:<job id>`: a call repeated after a
crash (at least once) records nothing new.

Outcomes: a 2xx answer completes the job with outputs `status` and `body` (text, first
64 KiB); any other status is an error of kind `http_<status>`; no answer (refused, timed
out, DNS) is kind `network`; a request that cannot be made (not http/https, a host outside
`STEPFLOW_NOTIFICATION_HOSTS` when that is set, a bad method) is kind `invalid_request`.
Redirects are not followed (a 3xx is an error), so an allow-list cannot be bypassed.

Only the standard library: the backend imports this module without the HTTP extras.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import msgspec
import structlog

from stepflow.adapters.wakeup import cancelled
from stepflow.engine import commands as cmd
from stepflow.engine import events as ev

log = structlog.get_logger("stepflow.notifications")

NOTIFICATION = "notification"
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
DEFAULT_TIMEOUT_S = 30.0
MAX_ANSWER_BYTES = 65_536
HOOK_ATTEMPTS = 3

_json = msgspec.json.Encoder()


class HttpCall(msgspec.Struct, frozen=True, kw_only=True):
    method: str
    url: str
    headers: dict[str, str] = {}
    body: bytes | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S


class HttpAnswer(msgspec.Struct, frozen=True, kw_only=True):
    status: int
    body: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class CallFailed(Exception):
    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


Transport = Callable[[HttpCall], HttpAnswer]
Record = Callable[[cmd.Command], Awaitable[cmd.Outcome]]


def allowed_hosts_from_env() -> frozenset[str] | None:
    """`STEPFLOW_NOTIFICATION_HOSTS=a.example,127.0.0.1`: the only hosts calls may go to."""
    text = os.environ.get("STEPFLOW_NOTIFICATION_HOSTS", "").strip()
    return frozenset(h.strip().lower() for h in text.split(",") if h.strip()) or None


def build_call(request: Mapping[str, Any], *, timeout_s: float | None = None,
               allowed_hosts: Iterable[str] | None = None) -> HttpCall:
    """A rendered request (method, url, headers, body) checked and encoded; `CallFailed` if unusable."""
    method = str(request.get("method") or "POST").upper()
    if method not in METHODS:
        raise CallFailed(f"unsupported method {method!r}", "invalid_request")
    url = str(request.get("url") or "")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallFailed(f"not an http(s) URL: {url[:200]!r}", "invalid_request")
    allowed = set(allowed_hosts) if allowed_hosts is not None else None
    if allowed is not None and parts.hostname.lower() not in allowed:
        raise CallFailed(f"host {parts.hostname!r} is not in STEPFLOW_NOTIFICATION_HOSTS", "invalid_request")
    raw_headers = request.get("headers") or {}
    if not isinstance(raw_headers, Mapping):
        raise CallFailed("headers must be an object", "invalid_request")
    headers = {str(k): str(v) for k, v in raw_headers.items()}
    for name, value in headers.items():
        if "\n" in name or "\r" in name or "\n" in value or "\r" in value:
            raise CallFailed(f"header {name!r} contains a line break", "invalid_request")
    body = request.get("body")
    data: bytes | None
    if body is None:
        data = None
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = _json.encode(body)
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
    return HttpCall(method=method, url=url, headers=headers, body=data, timeout_s=timeout_s or DEFAULT_TIMEOUT_S)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect())


def perform(call: HttpCall) -> HttpAnswer:
    """Make the call (blocking). Any status is an answer; no answer raises `CallFailed`."""
    request = urllib.request.Request(call.url, data=call.body, headers=call.headers, method=call.method)
    try:
        with _opener.open(request, timeout=call.timeout_s) as response:
            return HttpAnswer(status=response.status, body=_text(response.read(MAX_ANSWER_BYTES)))
    except urllib.error.HTTPError as error:
        with contextlib.suppress(Exception):
            return HttpAnswer(status=error.code, body=_text(error.read(MAX_ANSWER_BYTES)))
        return HttpAnswer(status=error.code)
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise CallFailed(f"{call.method} {_safe_url(call.url)}: {reason}", "network") from None


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _safe_url(url: str) -> str:
    """The URL without user info or query (which may hold secrets), for logs and errors."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class Notifier:
    """Runs notification jobs and hook calls for one backend, on its event loop."""

    def __init__(self, record: Record | None = None, *, max_concurrency: int = 16,
                 allowed_hosts: Iterable[str] | None = None, transport: Transport = perform,
                 hook_backoff_s: float = 1.0) -> None:
        self.record = record
        self.allowed_hosts = frozenset(allowed_hosts) if allowed_hosts is not None else allowed_hosts_from_env()
        self.transport = transport
        self.hook_backoff_s = hook_backoff_s
        self._slots = asyncio.Semaphore(max_concurrency)
        self._running: dict[str, asyncio.Task[None]] = {}
        self.stats = {"calls_ok": 0, "calls_failed": 0, "hooks_ok": 0, "hooks_failed": 0}

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def submit(self, order: ev.JobSubmitted) -> None:
        """Take a notification job's stored order; run it in the background."""
        if order.job_id in self._running:
            return  # republished while the first call is still under way
        task = asyncio.create_task(self._run_job(order), name=f"stepflow-notify-{order.job_id[:8]}")
        self._running[order.job_id] = task
        task.add_done_callback(lambda _: self._running.pop(order.job_id, None))

    async def _run_job(self, order: ev.JobSubmitted) -> None:
        job_id = order.job_id
        workflow_id = order.originator_id
        bound = log.bind(workflow_id=str(workflow_id), job_id=job_id)
        if order.delay_s:
            await asyncio.sleep(order.delay_s)
        started = time.monotonic()
        try:
            # answer well before the job's deadline, or the timeout check would race us
            call = build_call(order.parameters, timeout_s=order.timeout_s * 0.8 if order.timeout_s else None,
                              allowed_hosts=self.allowed_hosts)
            answer = await self.call(call)
        except CallFailed as error:
            command: cmd.Command = cmd.RecordError(
                workflow_id=workflow_id, job_id=job_id, message=str(error), kind=error.kind,
                cause=f"{NOTIFICATION}:{job_id}", execution_duration=time.monotonic() - started,
                worker=NOTIFICATION)
        else:
            duration = time.monotonic() - started
            if answer.ok:
                command = cmd.RecordCompleted(
                    workflow_id=workflow_id, job_id=job_id, outputs={"status": answer.status, "body": answer.body},
                    cause=f"{NOTIFICATION}:{job_id}", execution_duration=duration, worker=NOTIFICATION)
            else:
                command = cmd.RecordError(
                    workflow_id=workflow_id, job_id=job_id, kind=f"http_{answer.status}",
                    message=f"{call.method} {_safe_url(call.url)} answered {answer.status}: {answer.body[:200]}",
                    cause=f"{NOTIFICATION}:{job_id}", execution_duration=duration, worker=NOTIFICATION)
        self.stats["calls_ok" if isinstance(command, cmd.RecordCompleted) else "calls_failed"] += 1
        bound.info("notification_called", outcome=type(command).__name__, kind=getattr(command, "kind", None))
        if self.record is None:
            return
        try:
            outcome = await self.record(command)
        except Exception:  # noqa: BLE001  the store is down: the job's deadline will retry it
            bound.exception("notification_result_not_stored")
            return
        if outcome.rejected:
            bound.info("notification_result_refused", reason=outcome.rejected)

    async def call(self, call: HttpCall) -> HttpAnswer:
        """One call, off the event loop, within the concurrency bound."""
        async with self._slots:
            return await asyncio.to_thread(self.transport, call)

    async def call_hook(self, request: Mapping[str, Any], *, workflow_id: str, when: str) -> bool:
        """A hook: a few tries with backoff; a failure is logged, never raised."""
        bound = log.bind(workflow_id=workflow_id, hook=when)
        try:
            call = build_call(request, allowed_hosts=self.allowed_hosts)
        except CallFailed as error:
            bound.warning("hook_refused", error=str(error))
            self.stats["hooks_failed"] += 1
            return False
        problem = ""
        for attempt in range(1, HOOK_ATTEMPTS + 1):
            try:
                answer = await self.call(call)
            except CallFailed as error:
                problem = str(error)
            else:
                if answer.ok:
                    self.stats["hooks_ok"] += 1
                    bound.info("hook_called", status=answer.status, attempt=attempt)
                    return True
                problem = f"answered {answer.status}"
            if attempt < HOOK_ATTEMPTS:
                await asyncio.sleep(self.hook_backoff_s * 2 ** (attempt - 1))
        self.stats["hooks_failed"] += 1
        bound.error("hook_failed", url=_safe_url(call.url), error=problem, attempts=HOOK_ATTEMPTS)
        return False

    async def close(self) -> None:
        await cancelled(self._running.values())
