"""Pull API function: `FUNCTION_TARGET=pull`; consumers `POST /subscriptions/{name}/pull` and `/ack`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from hookhub.web import handle_pull, serve_function


async def pull(request: Request) -> Response:
    return await serve_function(request, handle_pull)
