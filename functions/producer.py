"""Producer API function: `FUNCTION_TARGET=events`; internal systems POST CloudEvents to `/`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from hookhub.web import handle_events, serve_function


async def events(request: Request) -> Response:
    return await serve_function(request, handle_events)
