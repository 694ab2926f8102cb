"""`GET /api/stats/timeline`: workflows and jobs per status, job-type durations, per time bin.

    GET /api/stats/timeline?bin=hour&since=2024-05-01T00:00:00Z&until=2024-05-02T00:00:00Z&job_type=encode

`bin` is minute, hour or day (bins aligned to UTC); `since` / `until` are RFC 3339 times (no
zone: UTC), by default the last 60 minutes, 24 hours or 30 days. See
`stepflow.projections.timeline` for what falls in a bin. A range of more than 1,500 bins is
cut to the 1,500 that end at `until`, and `since` after `until` is an empty range: the
answer's `since` and `until` say what was counted (any request the schema allows is answered).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stepflow.adapters.http import rights
from stepflow.adapters.http.api_workflows import services_of
from stepflow.adapters.http.errors import decode_query, json_response
from stepflow.adapters.http.schemas import Name
from stepflow.projections.timeline import timeline

Moment = Annotated[datetime, msgspec.Meta(extra_json_schema={"format": "date-time"})]


class TimelineQuery(msgspec.Struct, frozen=True, kw_only=True):
    bin: Literal["minute", "hour", "day"] = "hour"
    since: Moment | None = None
    until: Moment | None = None
    job_type: Name | None = None
    definition: Name | None = None


async def stats_timeline(request: Request) -> Response:
    s = services_of(request)
    rights.authenticate(request, s)
    q = decode_query(request, TimelineQuery)
    line = await s.read(timeline, s.store, bin=q.bin, since=q.since, until=q.until, job_type=q.job_type,
                        definition=q.definition, strict=False)
    return json_response(line)
