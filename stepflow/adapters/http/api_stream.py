"""Live updates of one workflow as server-sent events.

`GET /api/workflows/{id}/stream` sends an `event: workflow` with the same body as
`GET /api/workflows/{id}` whenever the workflow's view changes (checked every `poll_s`), a
comment line as a keep-alive, and ends after the workflow reached a final state (or after
`max_s`; the browser reconnects). Readable with `EventSource` or, to send the bearer
token, with `fetch` and a stream reader, as the web view does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from stepflow.adapters.http.api_workflows import get_workflow, visible_workflow
from stepflow.engine.statuses import WORKFLOW_FINAL
from stepflow.projections import queries

POLL_S = 0.5
KEEPALIVE_S = 15.0
MAX_S = 600.0


async def stream_workflow(request: Request) -> Response:
    s, _, workflow_id, _ = await visible_workflow(request)

    async def events() -> AsyncIterator[bytes]:
        seen: tuple[int, float] | None = None
        started = last_sent = time.monotonic()
        while time.monotonic() - started < MAX_S:
            detail = await s.read(queries.get_workflow, s.store, workflow_id)
            if detail is not None:
                key = (detail.workflow.version, detail.workflow.updated_at.timestamp())
                if key != seen:
                    seen = key
                    body = (await get_workflow(request)).body
                    yield b"event: workflow\ndata: " + bytes(body) + b"\n\n"
                    last_sent = time.monotonic()
                if detail.workflow.status in WORKFLOW_FINAL:
                    return
            if time.monotonic() - last_sent > KEEPALIVE_S:
                yield b": keep-alive\n\n"
                last_sent = time.monotonic()
            if await request.is_disconnected():
                return
            await asyncio.sleep(POLL_S)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
