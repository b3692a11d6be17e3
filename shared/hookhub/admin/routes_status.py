"""`/admin/broker`, `/admin/rejections`, `/admin/event-types`: what the broker holds, why
providers' requests were refused, and which event types exist."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Query

from hookhub.admin.auth import AdminHub
from hookhub.admin.models import (
    BrokerOut,
    EventTypeList,
    EventTypeOut,
    QueueOut,
    RejectionList,
    RejectionOut,
)
from hookhub.errors import Unavailable

if TYPE_CHECKING:
    from hookhub.hub import Hub

router = APIRouter(tags=["status"])
DESCRIBE_TIMEOUT = 5.0
Origin = Annotated[str | None, Query(min_length=1, max_length=100, description="provider or producer name")]
QueueRole = Literal["subscription", "archive", "unrouted", "dead", "other"]


def broker_kind(url: str) -> Literal["rabbitmq", "sqlite", "memory"]:
    if url.startswith("amqp"):
        return "rabbitmq"
    return "memory" if url.startswith("memory") else "sqlite"


def queue_roles(hub: Hub) -> dict[str, tuple[QueueRole, str | None]]:
    """Every queue the hub uses, in listing order, with its role (and subscription)."""
    topology = hub.topology
    roles: dict[str, tuple[QueueRole, str | None]] = {
        hub.queue_of(name): ("subscription", name) for name in sorted(hub.registry.current())
    }
    roles[topology.archive_queue] = ("archive", None)
    roles[topology.unrouted_queue] = ("unrouted", None)
    roles[topology.dead_queue] = ("dead", None)
    return roles


@router.get(
    "/broker",
    response_model=BrokerOut,
    summary="queues (depth, consumers, in flight) as the broker reports them, and dead-letter counts",
)
async def broker(hub: AdminHub) -> BrokerOut:
    await hub.registry.try_refresh()
    roles = queue_roles(hub)
    try:
        infos = await asyncio.wait_for(hub.broker.describe(list(roles)), DESCRIBE_TIMEOUT)
    except Exception as exc:
        raise Unavailable(f"the broker did not answer: {type(exc).__name__}", retry_after=5) from None
    return BrokerOut(
        broker=broker_kind(hub.config.broker),
        queues=[
            QueueOut(
                name=info.name,
                role=roles[info.name][0] if info.name in roles else "other",
                subscription=roles[info.name][1] if info.name in roles else None,
                depth=info.depth,
                consumers=info.consumers,
                in_flight=info.in_flight,
            )
            for info in infos
        ],
        dead_letters=await hub.store.attempts.dead_letter_counts(),
    )


@router.get("/rejections", response_model=RejectionList, summary="refused inbound requests, newest first")
async def rejections(
    hub: AdminHub, provider: Origin = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> RejectionList:
    found = await hub.store.observations.rejections(provider, limit)
    return RejectionList(
        rejections=[
            RejectionOut.model_validate(
                {"provider": r.provider, "at": r.at, "status": r.status, "reason": r.reason}
            )
            for r in found
        ]
    )


@router.get("/event-types", response_model=EventTypeList, summary="event types seen per provider or producer")
async def event_types(hub: AdminHub, provider: Origin = None) -> EventTypeList:
    found = await hub.store.observations.event_types(provider)
    return EventTypeList(
        event_types=[
            EventTypeOut.model_validate(
                {"provider": t.origin, "type": t.type, "count": t.count, "last_seen": t.last_seen}
            )
            for t in found
        ]
    )
