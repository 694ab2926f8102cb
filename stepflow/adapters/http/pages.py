"""The web view: a few static pages and plain JavaScript that read the JSON API.

No build step and nothing server-rendered beyond the files in `static/`: each page is an
HTML shell; `app.js` holds the shared pieces (the bearer token, kept in the browser's
session storage and asked for when the API answers 401; fetch; formatting), and one script
per page draws it. The pages themselves carry no data, so they are served without a token.

    /                       workflows: status filters, progress bars, start form
    /workflows/{id}         one workflow: step DAG coloured by status, jobs, errors, history;
                            live through the server-sent events stream (polling as fallback)
    /workers                known workers
    /stats                  workflows by status, chart of job durations per type
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

STATIC = Path(__file__).parent / "static"
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'self'; style-src 'self'; script-src 'self'; "
                                       "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"}


def _page(name: str) -> object:
    async def page(request: Request) -> Response:
        return FileResponse(STATIC / name, media_type="text/html", headers=_HEADERS)

    page.__name__ = f"page_{name.split('.')[0]}"
    return page


def routes() -> list[Route]:
    return [
        Route("/", _page("index.html"), methods=["GET"]),  # type: ignore[arg-type]
        Route("/workflows/{workflow_id}", _page("workflow.html"), methods=["GET"]),  # type: ignore[arg-type]
        Route("/workers", _page("workers.html"), methods=["GET"]),  # type: ignore[arg-type]
        Route("/stats", _page("stats.html"), methods=["GET"]),  # type: ignore[arg-type]
    ]
