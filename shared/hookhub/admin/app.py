"""The admin API as one FastAPI app, with every failure answered as `{"error": "<message>"}`.

Its routes carry their full `/admin/...` paths, so the OpenAPI description at
`/admin/openapi.json` names the real URLs. The hub's Starlette app reaches it through
`admin_route`, which hands every `/admin/...` request over unchanged (a `Mount` would strip the
prefix, and a `{path:path}` route misses paths holding a newline).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import URLPath
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import ASGIApp, Receive, Scope, Send

from hookhub.admin import (
    routes_dead_letters,
    routes_replays,
    routes_status,
    routes_subscriptions,
    routes_trace,
)
from hookhub.admin.auth import GetHub
from hookhub.admin.models import ErrorBody, InvalidInterval
from hookhub.broker.base import BrokerUnavailable
from hookhub.errors import Rejection
from hookhub.store.base import StoreUnavailable
from hookhub.subscriptions import ReadOnly, SubscriptionExists, UnknownSubscription

log = logging.getLogger("hookhub.admin")
PREFIX = "/admin"
_ERROR = {"model": ErrorBody}
# What any route may answer besides its own outcomes; each route adds its 404/409.
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {**_ERROR, "description": "malformed request (body not JSON, inverted interval)"},
    401: {**_ERROR, "description": "missing or wrong admin token"},
    403: {**_ERROR, "description": "the admin API is disabled (no admin_token configured)"},
    404: {**_ERROR, "description": "not found"},
    409: {**_ERROR, "description": "conflict"},
    422: {**_ERROR, "description": "invalid fields; the message names them"},
    502: {**_ERROR, "description": "on Knative: the Kubernetes API refused a subscription's RabbitmqSource"},
    503: {**_ERROR, "description": "the store, broker or Kubernetes API is unreachable: retry later"},
}


def create_admin_app(get_hub: GetHub) -> FastAPI:
    """The admin API over whatever hub `get_hub` returns (started; awaited per request)."""
    app = FastAPI(
        title="hookhub admin API",
        version="1",
        description="Operate a hookhub: subscriptions, dead letters, replays, traces, broker state. "
        'Every call needs `Authorization: Bearer <admin_token>`; errors are `{"error": message}`.',
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=f"{PREFIX}/docs",
        redoc_url=None,
    )
    app.state.get_hub = get_hub
    api = APIRouter(prefix=PREFIX, responses=COMMON_RESPONSES)
    for module in (routes_subscriptions, routes_dead_letters, routes_replays, routes_trace, routes_status):
        api.include_router(module.router)
    app.include_router(api)
    _add_error_handlers(app)
    return app


class AdminRoute(BaseRoute):
    """Every request under `/admin/` (whatever bytes its path holds), handed to the admin app
    with its scope unchanged: the app matches the full paths its description names."""

    def __init__(self, admin: ASGIApp) -> None:
        self.app = admin

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and scope["path"].startswith(f"{PREFIX}/"):
            return Match.FULL, {}
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        raise NoMatchFound(name, path_params)


def admin_route(admin: FastAPI) -> AdminRoute:
    """The route that serves `admin` inside the hub's Starlette app: `routes=[..., admin_route(app)]`."""
    return AdminRoute(admin)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status, headers)


def _where(loc: tuple[Any, ...]) -> str:
    kind, *path = loc or ("body",)
    field = ".".join(str(p) for p in path)
    if kind == "body":
        return field or "request body"
    return f"{kind} parameter {field}" if field else str(kind)


def validation_message(exc: RequestValidationError) -> str:
    """One readable clause per problem, naming the field: `types: List should have at least 1 item`."""
    problems = []
    for err in exc.errors()[:10]:
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        problems.append(f"{_where(tuple(err.get('loc', ())))}: {message}")
    return "; ".join(problems) or "invalid request"


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if any(err.get("type") == "json_invalid" for err in exc.errors()):
            return error(400, "the request body is not valid JSON")
        sent_json = "json" in request.headers.get("content-type", "")
        if not sent_json and any(tuple(err.get("loc", ())) == ("body",) for err in exc.errors()):
            return error(422, "request body: send a JSON object with `Content-Type: application/json`")
        return error(422, validation_message(exc))

    @app.exception_handler(HTTPException)
    async def http(request: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(Rejection)
    async def rejected(request: Request, exc: Rejection) -> JSONResponse:
        return JSONResponse(exc.body(), exc.status, exc.headers)

    @app.exception_handler(UnknownSubscription)
    async def unknown(request: Request, exc: UnknownSubscription) -> JSONResponse:
        return error(404, str(exc))

    @app.exception_handler(ReadOnly)
    async def read_only(request: Request, exc: ReadOnly) -> JSONResponse:
        return error(409, str(exc))

    @app.exception_handler(SubscriptionExists)
    async def exists(request: Request, exc: SubscriptionExists) -> JSONResponse:
        return error(409, str(exc))

    @app.exception_handler(InvalidInterval)
    async def inverted(request: Request, exc: InvalidInterval) -> JSONResponse:
        return error(400, str(exc))

    @app.exception_handler(ValueError)
    async def refused(request: Request, exc: ValueError) -> JSONResponse:
        return error(422, str(exc))

    @app.exception_handler(StoreUnavailable)
    @app.exception_handler(BrokerUnavailable)
    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("admin API: %s unreachable: %s", type(exc).__name__, exc)
        what = "store" if isinstance(exc, StoreUnavailable) else "broker"
        return error(503, f"the {what} is unreachable: retry later", {"Retry-After": "5"})
