"""Fan-out function: `FUNCTION_TARGET=fanout`, triggered by a subscription's RabbitmqSource.

`POST /<subscription>` with one CloudEvent: one delivery attempt, its outcome made durable,
then 200 (the source acks). `HOOKHUB_SUBSCRIPTION` pins the subscription instead of the path.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from hookhub.web import handle_fanout, serve_function


async def fanout(request: Request) -> Response:
    return await serve_function(request, handle_fanout)
