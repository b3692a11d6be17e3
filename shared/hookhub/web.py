"""HTTP handlers and the all-in-one ASGI app that `hookhub run` serves.

The handlers take a Starlette `Request` and return a `Response`, which is exactly the contract
of a functions-framework `--asgi` target, so `functions/` reuse them unchanged. The bounds on
slow, oversized or abandoned bodies live here (`read_body`, `serve_function`) so they hold under
both servers; `hookhub run`'s header bounds are in `serving`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from hookhub.admin import admin_route, create_admin_app
from hookhub.broker.base import BrokerUnavailable
from hookhub.config import HubConfig
from hookhub.errors import BadRequest, NotFound, PayloadTooLarge, Rejection, Unavailable
from hookhub.events import Event
from hookhub.fanout.sender import delivery_id
from hookhub.hub import Hub
from hookhub.ingest import IngestResult
from hookhub.metrics import UNKNOWN_LABEL
from hookhub.producers import authenticate, parse_events
from hookhub.providers import InboundRequest
from hookhub.pull_api import pull_routes
from hookhub.serving import MAX_HEADER_BYTES
from hookhub.store.base import StoreUnavailable

BODY_TIMEOUT_SECONDS = 30.0  # from the handler's first read to the body's last byte

REJECTION_RESULTS = {  # the `result` label of a refused request, by status
    400: "invalid",
    401: "unauthorized",
    404: "unknown_provider",
    408: "timeout",
    413: "too_large",
    422: "invalid",
    431: "headers_too_large",
    499: "disconnected",
    503: "unavailable",
}
_WARN_STATUSES = frozenset({401, 503})  # wrong secrets and our own outages need an operator's eye
_MAX_LOGGED_CHARS = 200  # of any client-supplied string in a log line

log = logging.getLogger("hookhub.http")


class RequestTimeout(Rejection):
    """The body did not arrive in time; the connection is closed rather than kept waiting."""

    status = 408

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Connection": "close"})


class HeadersTooLarge(Rejection):
    status = 431

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Connection": "close"})


class ClientGone(Rejection):
    """The client hung up mid-body: no one reads the answer (nginx's 499)."""

    status = 499


def json_response(body: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")).encode(), status, headers, media_type="application/json"
    )


def rejection_response(exc: Rejection) -> Response:
    return json_response(exc.body(), exc.status, exc.headers)


async def read_body(request: Request, limit: int, headers: Mapping[str, str] | None = None) -> bytes:
    """The whole body, refusing as soon as it is known to exceed `limit` bytes (413), when it
    takes longer than BODY_TIMEOUT_SECONDS (408), or when the client hangs up (499)."""
    declared = (request.headers if headers is None else headers).get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body larger than {limit} bytes", headers={"Connection": "close"})
    chunks: list[bytes] = []
    size = 0
    watch = _BodyDeadlines.of_running_loop()
    task = watch.start()
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body larger than {limit} bytes", headers={"Connection": "close"})
            chunks.append(chunk)
    except asyncio.CancelledError:
        if not watch.expired(task):
            raise
        raise RequestTimeout(f"body not received within {BODY_TIMEOUT_SECONDS:g}s") from None
    except ClientDisconnect:
        raise ClientGone(f"client disconnected after {size} body bytes") from None
    finally:
        watch.stop(task)
    return b"".join(chunks)


class _BodyDeadlines:
    """Body read deadlines for one event loop, checked by one timer every fraction of the
    timeout: a timer per request (`asyncio.timeout`) would cost every webhook several µs,
    where this costs a dict insert and delete. A read is cancelled up to a quarter late."""

    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _BodyDeadlines] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._reading: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def of_running_loop(cls) -> _BodyDeadlines:
        loop = asyncio.get_running_loop()
        watch = cls._by_loop.get(loop)
        if watch is None:
            watch = cls._by_loop[loop] = cls(loop)
        return watch

    def start(self) -> asyncio.Task[Any]:
        task = asyncio.current_task(self._loop)
        assert task is not None  # read_body runs in a request's task
        self._reading[task] = self._loop.time() + BODY_TIMEOUT_SECONDS
        if self._timer is None:
            self._timer = self._loop.call_later(BODY_TIMEOUT_SECONDS / 4, self._sweep)
        return task

    def stop(self, task: asyncio.Task[Any]) -> None:
        self._reading.pop(task, None)

    def expired(self, task: asyncio.Task[Any]) -> bool:
        """Whether this watch cancelled `task`; if so, the cancellation is withdrawn."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        task.uncancel()
        return True

    def _sweep(self) -> None:
        now = self._loop.time()
        for task, deadline in list(self._reading.items()):
            if deadline <= now:
                del self._reading[task]
                self._expired.add(task)
                task.cancel()
        self._timer = self._loop.call_later(BODY_TIMEOUT_SECONDS / 4, self._sweep) if self._reading else None


def header_map(scope: Scope) -> dict[str, str]:
    """The request's headers as a dict, the first of a repeated name winning as in Starlette's
    `Headers.get`: decoded once per request, where every `Headers.get` scans and decodes the list."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(scope["headers"])}


def header_bytes(request: Request) -> int:
    """Bytes of request target and headers, as the client sent them (give or take separators)."""
    scope = request.scope
    return (
        len(scope["raw_path"] or b"")
        + len(scope["query_string"])
        + sum(len(name) + len(value) for name, value in scope["headers"])
    )


def log_rejection(
    exc: Rejection,
    request: Request,
    *,
    provider: str | None = None,
    producer: str | None = None,
    events: list[Event] | None = None,
) -> None:
    """The one line an operator gets per refused request: status, who, why, which event.
    Rejection messages never carry secrets (see errors.py); headers are never logged."""
    fields: dict[str, Any] = {"status": exc.status, "reason": exc.message[:_MAX_LOGGED_CHARS]}
    if provider is not None:
        fields["provider"] = provider[:_MAX_LOGGED_CHARS]
    if producer is not None:
        fields["producer"] = producer
    if events:
        fields["event_id"] = events[0].id if len(events) == 1 else f"{len(events)} events"
        fields["correlation_id"] = events[0].correlationid
    elif correlation := request.headers.get("x-correlation-id"):
        fields["correlation_id"] = correlation[:_MAX_LOGGED_CHARS]
    if request.client is not None:
        fields["client"] = request.client.host
    log.log(
        logging.WARNING if exc.status in _WARN_STATUSES else logging.INFO, "request rejected", extra=fields
    )


async def handle_webhook(hub: Hub, provider_name: str, request: Request) -> Response:
    """A provider's webhook: verify, validate, publish durably, then answer."""
    started = time.perf_counter()
    label = provider_name if provider_name in hub.providers else UNKNOWN_LABEL  # bounded by config
    event: Event | None = None
    try:
        provider = hub.providers.get(provider_name)
        if provider is None:
            raise NotFound(f"unknown provider {provider_name[:_MAX_LOGGED_CHARS]!r}")
        limit = provider.settings.max_body_bytes or hub.config.max_body_bytes
        headers = header_map(request.scope)
        inbound = InboundRequest(
            body=await read_body(request, limit, headers),
            headers=headers,
            query=request.query_params if request.scope["query_string"] else {},
            content_type=headers.get("content-type"),
        )
        provider.verify(inbound)
        reply = provider.special_reply(inbound)
        if reply is not None:
            hub.metrics.ingested.labels(provider_name, "special_reply").inc()
            return json_response(reply.body, reply.status)
        event = provider.to_event(inbound)
        (outcome,) = await hub.ingestor.ingest([event], origin=provider_name)
    except Rejection as exc:
        hub.metrics.ingested.labels(label, REJECTION_RESULTS.get(exc.status, "rejected")).inc()
        hub.observer.rejected(label, exc.status, exc.message)
        log_rejection(exc, request, provider=provider_name, events=[event] if event else None)
        return rejection_response(exc)
    hub.metrics.ingested.labels(provider_name, outcome.value).inc()
    if outcome is IngestResult.ACCEPTED:
        hub.observer.accepted(provider_name, (event,))
    if outcome is IngestResult.DUPLICATE:
        return json_response({"id": event.id, "status": "duplicate"}, 200)
    hub.metrics.ingest_latency.labels(provider_name).observe(time.perf_counter() - started)
    return json_response({"id": event.id, "status": "accepted"}, 202)


async def handle_events(hub: Hub, request: Request) -> Response:
    """The producer API: CloudEvents from internal systems, single or batch (all-or-nothing)."""
    producer: str | None = None  # a configured producer's name once its token matched
    events: list[Event] = []
    try:
        headers = header_map(request.scope)
        producer = authenticate(headers.get("authorization"), hub.producer_tokens)
        body = await read_body(request, hub.config.max_body_bytes, headers)
        events, batch = parse_events(body, headers)
        outcomes = await hub.ingestor.ingest(events, origin=producer)
    except Rejection as exc:
        hub.metrics.ingested.labels(
            producer or UNKNOWN_LABEL, REJECTION_RESULTS.get(exc.status, "rejected")
        ).inc()
        hub.observer.rejected(producer or UNKNOWN_LABEL, exc.status, exc.message)
        log_rejection(exc, request, producer=producer, events=events)
        return rejection_response(exc)
    new = [e for e, o in zip(events, outcomes, strict=True) if o is IngestResult.ACCEPTED]
    accepted = [e.id for e in new]
    hub.observer.accepted(producer, new)
    duplicates = [e.id for e, o in zip(events, outcomes, strict=True) if o is IngestResult.DUPLICATE]
    if accepted:
        hub.metrics.ingested.labels(producer, "accepted").inc(len(accepted))
    if duplicates:
        hub.metrics.ingested.labels(producer, "duplicate").inc(len(duplicates))
    status = 202 if accepted else 200
    if not batch:
        return json_response({"id": events[0].id, "status": "accepted" if accepted else "duplicate"}, status)
    body_out = {"status": "accepted" if accepted else "duplicate", "ids": [e.id for e in events]}
    if duplicates:
        body_out["duplicates"] = duplicates
    return json_response(body_out, status)


async def handle_fanout(hub: Hub, request: Request) -> Response:
    """Knative's trigger for one subscription: `POST /<subscription>` with one binary-mode
    CloudEvent from the subscription's RabbitmqSource. 2xx means the outcome is durable (the
    source acks); 503 asks the source to redeliver (our store or broker is in trouble)."""
    parts = [p for p in request.url.path.split("/") if p]
    name = os.environ.get("HOOKHUB_SUBSCRIPTION") or (parts[0] if parts else "")
    try:
        sub = await hub.trigger.lookup(name)
        if sub is None:
            return rejection_response(NotFound(f"unknown push subscription {name!r}"))
        event = triggered_event(await read_body(request, hub.config.max_body_bytes), request.headers)
        step = await hub.trigger.handle(sub, event)
    except Rejection as exc:
        return rejection_response(exc)
    except (StoreUnavailable, BrokerUnavailable) as exc:
        return rejection_response(Unavailable(f"outcome not durable: {type(exc).__name__}"))
    return json_response(
        {"verdict": step.verdict.value, "attempt": step.attempt, "delivery_id": delivery_id(name, event)}, 200
    )


def triggered_event(body: bytes, headers: Any) -> Event:
    """The binary-mode CloudEvent an event source POSTs to a function (header values are
    percent-decoded, as the CloudEvents HTTP binding asks of receivers)."""
    missing = [h for h in ("ce-id", "ce-source", "ce-type") if not headers.get(h)]
    if missing:
        raise BadRequest(f"missing CloudEvent headers: {', '.join(missing)}")
    attrs = {k[3:]: unquote(v) for k, v in headers.items() if k.startswith("ce-") and k != "ce-specversion"}
    if headers.get("content-type"):
        attrs["datacontenttype"] = headers["content-type"]
    return Event.from_attributes(attrs, body)


async def handle_healthz(hub: Hub, request: Request) -> Response:
    return json_response({"status": "ok"}, 200)


async def handle_readyz(hub: Hub, request: Request) -> Response:
    checks = await hub.readiness()
    ok = all(checks.values())
    return json_response({"status": "ready" if ok else "unavailable", "checks": checks}, 200 if ok else 503)


async def handle_metrics(hub: Hub, request: Request) -> Response:
    await hub.refresh_gauges()
    return Response(hub.metrics.render(), 200, media_type="text/plain; version=0.0.4; charset=utf-8")


def probe_routes(hub: Hub) -> list[Route]:
    """/healthz, /readyz and /metrics of a process serving `hub` (the hub app, the archiver)."""

    def route(path: str, handler: Any) -> Route:
        async def endpoint(request: Request) -> Response:
            return await handler(hub, request)

        return Route(path, endpoint, methods=["GET"])

    return [route(path, handler) for path, handler in _PROBES.items()]


def create_app(config: HubConfig, *, dispatch: bool = True, processes: int = 1) -> Starlette:
    """Every function on one port, plus (with `dispatch`) the fan-out dispatcher, with the hub
    started and stopped by the ASGI lifespan; `processes` hubs serve side by side (`--workers`)."""
    hub = Hub(config, processes=processes)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await hub.start(dispatch=dispatch)
        try:
            yield
        finally:
            await hub.close()

    async def webhook(request: Request) -> Response:
        return await handle_webhook(hub, request.path_params["provider"], request)

    async def events(request: Request) -> Response:
        return await handle_events(hub, request)

    async def started_hub() -> Hub:
        return hub

    app = HubApp(
        hub,
        routes=[
            Route("/webhooks/{provider}", webhook, methods=["POST"]),
            Route("/events", events, methods=["POST"]),
            *probe_routes(hub),
            *pull_routes(lambda: hub),
            admin_route(create_admin_app(started_hub)),
        ],
        lifespan=lifespan,
    )
    app.state.hub = hub
    return app


class HubApp(Starlette):
    """The hub's app: the two ingest routes, which every webhook takes, are answered before
    Starlette's middleware stack and router, whose per-request work the profile showed to cost
    about as much as the handler's own; everything else takes the ordinary way.

    The routes stay declared so that other methods on these paths get Starlette's 405; a POST
    never reaches their endpoints."""

    def __init__(self, hub: Hub, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path == "/events":
                return await self._answer(
                    handle_events(self.hub, Request(scope, receive)), scope, receive, send
                )
            name = path[len(_WEBHOOKS) :] if path.startswith(_WEBHOOKS) else ""
            if name and "/" not in name:
                request = Request(scope, receive)
                return await self._answer(handle_webhook(self.hub, name, request), scope, receive, send)
        await super().__call__(scope, receive, send)

    @staticmethod
    async def _answer(handling: Awaitable[Response], scope: Scope, receive: Receive, send: Send) -> None:
        """What Starlette's ServerErrorMiddleware does for these routes: a bug answers 500, logged."""
        try:
            response = await handling
        except Exception:
            log.exception("unhandled error serving %s", scope["path"][:_MAX_LOGGED_CHARS])
            response = json_response({"error": "internal error"}, 500)
        await response(scope, receive, send)


_WEBHOOKS = "/webhooks/"


async def serve_function(request: Request, handler: Any) -> Response:
    """A functions-framework target's dispatch: probes and metrics on their paths, else `handler`.

    Knative probes a function's own container, so every function answers /healthz, /readyz
    and /metrics itself; everything else is the function's work.
    """
    from hookhub.hub import get_hub

    if header_bytes(request) > MAX_HEADER_BYTES:  # under `hookhub run` the protocol refuses first
        exc: Rejection = HeadersTooLarge(f"request headers larger than {MAX_HEADER_BYTES} bytes")
        log_rejection(exc, request)
        return rejection_response(exc)
    try:
        hub = await get_hub()
    except Unavailable as exc:  # get_hub logged why, once; a line per request would drown it
        return rejection_response(exc)
    if request.method == "GET":
        probe = _PROBES.get(request.url.path)
        if probe is not None:
            return await probe(hub, request)
    return await handler(hub, request)


_PROBES = {"/healthz": handle_healthz, "/readyz": handle_readyz, "/metrics": handle_metrics}


class AppResponse(Response):
    """Hands the request, unread, to another ASGI app: how a functions-framework target (which
    must return a `Response`) serves the admin API's FastAPI app or the pull API's routes."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__()
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


_admin_app: ASGIApp | None = None
_pull_router: Router | None = None


async def handle_admin(hub: Hub, request: Request) -> Response:
    """The admin API in a function of its own; it also runs the resend jobs, which on Knative
    have no `hookhub run` process to run them."""
    global _admin_app
    if _admin_app is None:
        from hookhub.hub import get_hub

        _admin_app = create_admin_app(get_hub)
    hub.replays.start()
    return AppResponse(_admin_app)


async def handle_pull(hub: Hub, request: Request) -> Response:
    """The pull API (`/subscriptions/{name}/pull` and `/ack`) in a function of its own."""
    global _pull_router
    if _pull_router is None:
        _pull_router = Router(pull_routes(lambda: hub))
    return AppResponse(_pull_router)
