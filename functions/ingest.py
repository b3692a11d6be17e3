"""Provider webhook function: `FUNCTION_TARGET=webhook` with `HOOKHUB_PROVIDER=<name>`.

On Knative each provider is its own Service running this target at `POST /`. Served locally,
`functions-framework --target webhook --asgi` also accepts `POST /<provider name>`, and
`functions-framework --target <provider name> --asgi` serves that provider alone (see main.py).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from hookhub.hub import Hub
from hookhub.web import handle_webhook, serve_function


def _provider_from(request: Request) -> str:
    return os.environ.get("HOOKHUB_PROVIDER") or request.url.path.strip("/").split("/")[0]


async def webhook(request: Request) -> Response:
    async def handle(hub: Hub, request: Request) -> Response:
        return await handle_webhook(hub, _provider_from(request), request)

    return await serve_function(request, handle)


def for_provider(name: str) -> Callable[[Request], Awaitable[Response]]:
    """A target bound to one provider name, for `--target <name>`."""

    async def provider_webhook(request: Request) -> Response:
        async def handle(hub: Hub, request: Request) -> Response:
            return await handle_webhook(hub, name, request)

        return await serve_function(request, handle)

    provider_webhook.__name__ = name
    return provider_webhook
