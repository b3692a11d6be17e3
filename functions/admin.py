"""Admin API function: `FUNCTION_TARGET=admin`; operators and the CLI call `/admin/...`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from hookhub.web import handle_admin, serve_function


async def admin(request: Request) -> Response:
    return await serve_function(request, handle_admin)
