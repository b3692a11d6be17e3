"""`/admin/subscriptions`: list, create, change, delete, rotate the secret, pause and resume.

The registry decides (file subscriptions are read-only, names are unique, configs valid); these
routes only translate between its objects and the JSON of the API. A listing answers even with
the broker down: depths are then null.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Body, Path, Response

from hookhub.admin.auth import AdminHub
from hookhub.admin.models import (
    NAME_PATTERN,
    BackoffOut,
    PauseIn,
    Responses,
    RotateIn,
    RotateOut,
    SubscriptionChanges,
    SubscriptionCreated,
    SubscriptionIn,
    SubscriptionList,
    SubscriptionOut,
    error_response,
)
from hookhub.store.records import StateRecord, SubscriptionState
from hookhub.subscriptions import Subscription, UnknownSubscription

log = logging.getLogger(__name__)
DESCRIBE_TIMEOUT = 2.0  # seconds the listing waits for queue depths before showing null

if TYPE_CHECKING:
    from hookhub.hub import Hub

router = APIRouter(prefix="/subscriptions", tags=["subscriptions"])
NameParam = Annotated[str, Path(pattern=NAME_PATTERN, description="the subscription's name")]
_MISSING: Responses = {404: error_response("no such subscription")}
_READ_ONLY: Responses = {409: error_response("defined in hookhub.yaml: read-only here")}


async def find_subscription(hub: Hub, name: str) -> Subscription:
    """The subscription, re-reading the store once if this process has not seen it yet (another
    replica may have created it); UnknownSubscription (404) otherwise."""
    sub = hub.registry.current().get(name)
    if sub is None:
        sub = (await hub.registry.try_refresh()).get(name)
    if sub is None:
        raise UnknownSubscription(name)
    return sub


async def queue_depths(hub: Hub, queues: Sequence[str]) -> dict[str, int]:
    """Ready messages per queue; empty when the broker does not answer in time."""
    try:
        infos = await asyncio.wait_for(hub.broker.describe(queues), DESCRIBE_TIMEOUT)
    except Exception as exc:  # the listing must answer with the broker down
        log.info("queue depths unavailable for the admin API: %s", exc)
        return {}
    return {info.name: info.depth for info in infos}


def subscription_out(
    hub: Hub, sub: Subscription, state: StateRecord | None, depths: dict[str, int]
) -> SubscriptionOut:
    config = sub.config
    queue = hub.queue_of(sub.name)
    expires = sub.previous_secret_expires_at
    rotating = expires if sub.previous_secret and expires and expires > hub.clock.now() else None
    return SubscriptionOut(
        name=sub.name,
        origin=sub.origin,
        mode=config.mode,
        url=str(config.url) if config.url is not None else None,
        types=list(config.types),
        state=(state.state if state else SubscriptionState.ACTIVE).value,
        state_reason=state.reason if state else "",
        failing_since=state.failing_since if state else None,
        queue=queue,
        depth=depths.get(queue),
        max_attempts=config.max_attempts,
        max_in_flight=config.max_in_flight,
        rate_limit=config.rate_limit,
        timeout=config.timeout,
        backoff=BackoffOut.model_validate(config.backoff.model_dump()),
        visibility_timeout=config.visibility_timeout if config.mode == "pull" else None,
        secret_rotating_until=rotating,
        created_at=sub.created_at,
    )


async def describe_one(hub: Hub, sub: Subscription) -> SubscriptionOut:
    states = await hub.store.subscriptions.records()
    depths = await queue_depths(hub, [hub.queue_of(sub.name)])
    return subscription_out(hub, sub, states.get(sub.name), depths)


@router.get("", response_model=SubscriptionList, summary="every subscription, with state and depth")
async def list_subscriptions(hub: AdminHub) -> SubscriptionList:
    subs = await hub.registry.try_refresh()
    states = await hub.store.subscriptions.records()
    depths = await queue_depths(hub, [hub.queue_of(name) for name in subs])
    return SubscriptionList(
        subscriptions=[
            subscription_out(hub, sub, states.get(name), depths) for name, sub in sorted(subs.items())
        ]
    )


@router.get("/{name}", response_model=SubscriptionOut, responses=_MISSING)
async def get_subscription(hub: AdminHub, name: NameParam) -> SubscriptionOut:
    return await describe_one(hub, await find_subscription(hub, name))


@router.post(
    "",
    status_code=201,
    response_model=SubscriptionCreated,
    responses={409: error_response("a subscription of that name exists")},
    summary="create a runtime subscription (a push one gets a whsec_ secret when none is given)",
)
async def create_subscription(hub: AdminHub, body: SubscriptionIn) -> SubscriptionCreated:
    doc = body.changes()
    name = doc.pop("name")
    sub, secret = await hub.registry.create(name, doc)
    out = await describe_one(hub, sub)
    return SubscriptionCreated(**out.model_dump(), secret=secret)


@router.patch("/{name}", response_model=SubscriptionOut, responses={**_MISSING, **_READ_ONLY})
async def update_subscription(hub: AdminHub, name: NameParam, body: SubscriptionChanges) -> SubscriptionOut:
    sub = await hub.registry.update(name, body.changes())
    return await describe_one(hub, sub)


@router.delete(
    "/{name}",
    status_code=204,
    response_class=Response,
    responses={**_MISSING, **_READ_ONLY},
    summary="delete a runtime subscription, its queue and the events waiting in it",
)
async def delete_subscription(hub: AdminHub, name: NameParam) -> Response:
    await hub.registry.delete(name)
    return Response(status_code=204)


@router.post("/{name}/rotate-secret", response_model=RotateOut, responses={**_MISSING, **_READ_ONLY})
async def rotate_secret(
    hub: AdminHub, name: NameParam, body: Annotated[RotateIn | None, Body()] = None
) -> RotateOut:
    body = body or RotateIn()
    sub, secret = await hub.registry.rotate_secret(name, body.secret, body.overlap)
    return RotateOut(secret=secret, previous_expires_at=sub.previous_secret_expires_at)


@router.post("/{name}/pause", response_model=SubscriptionOut, responses=_MISSING)
async def pause(
    hub: AdminHub, name: NameParam, body: Annotated[PauseIn | None, Body()] = None
) -> SubscriptionOut:
    sub = await hub.registry.pause(name, (body.reason if body else None) or "")
    return await describe_one(hub, sub)


@router.post("/{name}/resume", response_model=SubscriptionOut, responses=_MISSING)
async def resume(hub: AdminHub, name: NameParam) -> SubscriptionOut:
    return await describe_one(hub, await hub.registry.resume(name))
