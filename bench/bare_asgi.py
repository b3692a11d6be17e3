"""Ceiling A: the least an ASGI app can do for an ingest request, with no framework at all.

It reads the whole body (as the hub must, to verify the signature) and answers 202 with a small
JSON body, so wrk against it measures uvicorn + httptools + the client, which the hub can never beat.
GET (used as the readiness probe when this app stands in for the hub) answers 200.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_ACCEPTED = b'{"status":"accepted"}'
_OK = b'{"status":"ok"}'


def _start(status: int, body: bytes) -> Message:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return {"type": "http.response.start", "status": status, "headers": headers}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Read the request body to the end, then answer 202 (POST) or 200 (anything else)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        more = message.get("more_body", False)
    status, body = (202, _ACCEPTED) if scope["method"] == "POST" else (200, _OK)
    await send(_start(status, body))
    await send({"type": "http.response.body", "body": body})
