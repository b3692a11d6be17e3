"""HTTP handlers and the all-in-one ASGI app that `hookhub run` serves.

The handlers take a Starlette `Request` and return a `Response`, which is exactly the contract
of a functions-framework `--asgi` target, so `functions/` reuse them unchanged.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hookhub.broker.base import BrokerUnavailable
from hookhub.config import HubConfig
from hookhub.delivery import delivery_id
from hookhub.errors import BadRequest, NotFound, PayloadTooLarge, Rejection, Unavailable
from hookhub.events import Event
from hookhub.hub import Hub
from hookhub.ingest import Outcome
from hookhub.producers import authenticate, parse_events
from hookhub.providers import InboundRequest
from hookhub.store.base import StoreUnavailable, SubscriptionState

PARKED_RECHECK_SECONDS = 60.0  # a paused subscription's event comes back to the function this often

OUTCOME_LABELS = {
    400: "invalid",
    401: "unauthorized",
    404: "unknown_provider",
    413: "too_large",
    415: "invalid",
    422: "invalid",
    503: "unavailable",
}


def json_response(body: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")).encode(), status, headers, media_type="application/json"
    )


def rejection_response(exc: Rejection) -> Response:
    return json_response(exc.body(), exc.status, exc.headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def handle_webhook(hub: Hub, provider_name: str, request: Request) -> Response:
    """A provider's webhook: verify, validate, publish durably, then answer."""
    started = time.perf_counter()
    try:
        provider = hub.providers.get(provider_name)
        if provider is None:
            raise NotFound(f"unknown provider {provider_name!r}")
        limit = provider.settings.max_body_bytes or hub.config.max_body_bytes
        inbound = InboundRequest(
            body=await read_body(request, limit),
            headers=request.headers,
            query=request.query_params,
            content_type=request.headers.get("content-type"),
        )
        provider.verify(inbound)
        reply = provider.special_reply(inbound)
        if reply is not None:
            hub.metrics.ingested.labels(provider_name, "special_reply").inc()
            return json_response(reply.body, reply.status)
        event = provider.to_event(inbound)
        (outcome,) = await hub.ingestor.ingest([event], origin=provider_name)
    except Rejection as exc:
        hub.metrics.ingested.labels(provider_name, OUTCOME_LABELS.get(exc.status, "rejected")).inc()
        return rejection_response(exc)
    hub.metrics.ingested.labels(provider_name, outcome.value).inc()
    if outcome is Outcome.DUPLICATE:
        return json_response({"id": event.id, "status": "duplicate"}, 200)
    hub.metrics.ingest_latency.labels(provider_name).observe(time.perf_counter() - started)
    return json_response({"id": event.id, "status": "accepted"}, 202)


async def handle_events(hub: Hub, request: Request) -> Response:
    """The producer API: CloudEvents from internal systems, single or batch (all-or-nothing)."""
    producer = "producer"
    try:
        producer = authenticate(request.headers.get("authorization"), hub.producer_tokens)
        body = await read_body(request, hub.config.max_body_bytes)
        events, batch = parse_events(body, request.headers)
        outcomes = await hub.ingestor.ingest(events, origin=producer)
    except Rejection as exc:
        hub.metrics.ingested.labels(producer, OUTCOME_LABELS.get(exc.status, "rejected")).inc()
        return rejection_response(exc)
    accepted = [e.id for e, o in zip(events, outcomes, strict=True) if o is Outcome.ACCEPTED]
    duplicates = [e.id for e, o in zip(events, outcomes, strict=True) if o is Outcome.DUPLICATE]
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
    CloudEvent (from the subscription's RabbitmqSource), or `/<subscription>/dead-letter` from
    the source's dead-letter sink. 2xx means the outcome is durable (the source acks); 5xx asks
    the source to redeliver (our store or broker is in trouble)."""
    parts = [p for p in request.url.path.split("/") if p]
    name = os.environ.get("HOOKHUB_SUBSCRIPTION") or (parts[0] if parts else "")
    sub = hub.config.subscriptions.get(name)
    if sub is None or sub.mode != "push":
        return rejection_response(NotFound(f"unknown push subscription {name!r}"))
    try:
        event = triggered_event(await read_body(request, hub.config.max_body_bytes), request.headers)
        if parts[-1:] == ["dead-letter"]:
            await hub.fanout.record_dead_letter(name, event, 0, "the event source gave up redelivering it")
            return json_response({"outcome": "dead"}, 200)
        queue = hub.queue_for(name)
        states = await hub.store.subscription_states()
        if states.get(name, SubscriptionState.ACTIVE) is not SubscriptionState.ACTIVE:
            # paused or disabled: park the event on the broker; it comes back after a while
            await hub.broker.schedule(queue, event, attempt=1, delay=PARKED_RECHECK_SECONDS)
            return json_response({"outcome": "parked"}, 200)
        attempt = await hub.store.attempt_count(delivery_id(name, event)) + 1
        outcome = await hub.fanout.attempt(name, sub, event, attempt)
        decision = outcome.decision
        if decision.outcome == "retry":
            await hub.broker.schedule(queue, event, attempt=attempt + 1, delay=decision.delay or 0.0)
        elif decision.outcome == "disabled":
            await hub.broker.schedule(queue, event, attempt=attempt, delay=PARKED_RECHECK_SECONDS)
    except Rejection as exc:
        return rejection_response(exc)
    except (StoreUnavailable, BrokerUnavailable) as exc:
        return rejection_response(Unavailable(f"outcome not durable: {type(exc).__name__}"))
    return json_response(
        {"outcome": decision.outcome, "attempt": attempt, "delivery_id": outcome.delivery_id}, 200
    )


def triggered_event(body: bytes, headers: Any) -> Event:
    """The binary-mode CloudEvent an event source POSTs to a function."""
    missing = [h for h in ("ce-id", "ce-source", "ce-type") if not headers.get(h)]
    if missing:
        raise BadRequest(f"missing CloudEvent headers: {', '.join(missing)}")
    attrs = {k[3:]: v for k, v in headers.items() if k.startswith("ce-")}
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


def create_app(config: HubConfig, *, dispatch: bool = True) -> Starlette:
    """Every function on one port, plus (with `dispatch`) the fan-out dispatcher, with the hub
    started and stopped by the ASGI lifespan."""
    hub = Hub(config)

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

    async def healthz(request: Request) -> Response:
        return await handle_healthz(hub, request)

    async def readyz(request: Request) -> Response:
        return await handle_readyz(hub, request)

    async def metrics(request: Request) -> Response:
        return await handle_metrics(hub, request)

    app = Starlette(
        routes=[
            Route("/webhooks/{provider}", webhook, methods=["POST"]),
            Route("/events", events, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.hub = hub
    return app


async def serve_function(request: Request, handler: Any) -> Response:
    """A functions-framework target's dispatch: probes and metrics on their paths, else `handler`.

    Knative probes a function's own container, so every function answers /healthz, /readyz
    and /metrics itself; everything else is the function's work.
    """
    from hookhub.hub import get_hub

    try:
        hub = await get_hub()
    except Unavailable as exc:
        return rejection_response(exc)
    if request.method == "GET":
        probe = _PROBES.get(request.url.path)
        if probe is not None:
            return await probe(hub, request)
    return await handler(hub, request)


_PROBES = {"/healthz": handle_healthz, "/readyz": handle_readyz, "/metrics": handle_metrics}
