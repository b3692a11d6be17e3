"""`/admin/dead-letters`: list (filtered, keyset-paginated), show one with its attempts, replay
and purge. Replaying re-publishes through the normal retry path (`DeadLetters`)."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Path, Query

from hookhub.admin.auth import AdminHub
from hookhub.admin.models import (
    DELIVERY_ID_PATTERN,
    MAX_KEY,
    NAME_PATTERN,
    AttemptOut,
    DeadLetterDetail,
    DeadLetterOut,
    DeadLetterPage,
    DeadLetterSelector,
    EventOut,
    Purged,
    Replayed,
    TimeIn,
    check_interval,
    decode_cursor,
    encode_cursor,
    error_response,
)
from hookhub.admin.routes_subscriptions import find_subscription
from hookhub.errors import NotFound
from hookhub.store.records import AttemptRecord, DeadLetter, DeadLetterQuery

router = APIRouter(prefix="/dead-letters", tags=["dead letters"])


def dead_letter_out(dl: DeadLetter) -> DeadLetterOut:
    return DeadLetterOut(
        delivery_id=dl.delivery_id,
        subscription=dl.subscription,
        source=dl.source,
        event_id=dl.event_id,
        type=dl.event_type,
        correlation_id=dl.correlation_id,
        attempts=dl.attempts,
        last_status=dl.last_status,
        last_error=dl.last_error,
        dead_at=dl.dead_at,
    )


def attempt_out(a: AttemptRecord) -> AttemptOut:
    return AttemptOut.model_validate(
        {
            "delivery_id": a.delivery_id,
            "subscription": a.subscription,
            "attempt": a.attempt,
            "attempted_at": a.attempted_at,
            "status_code": a.status_code,
            "latency_ms": a.latency_ms,
            "error": a.error,
            "verdict": a.verdict,
            "next_attempt_at": a.next_attempt_at,
        }
    )


def _query(selector: DeadLetterSelector) -> DeadLetterQuery:
    check_interval(selector.since, selector.until, ("since", "until"))
    return DeadLetterQuery(
        subscription=selector.subscription,
        type=selector.type,
        since=selector.since,
        until=selector.until,
        delivery_ids=selector.delivery_ids,
    )


@router.get("", response_model=DeadLetterPage, summary="dead letters not yet replayed, oldest first")
async def list_dead_letters(
    hub: AdminHub,
    subscription: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    type: Annotated[
        str | None, Query(min_length=1, max_length=MAX_KEY, description="exact event type")
    ] = None,
    since: Annotated[TimeIn | None, Query(description="dead at or after")] = None,
    until: Annotated[TimeIn | None, Query(description="dead before")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[
        str | None, Query(max_length=200, description="`next_cursor` of the previous page")
    ] = None,
) -> DeadLetterPage:
    check_interval(since, until, ("since", "until"))
    after = decode_cursor(cursor) if cursor else None
    query = DeadLetterQuery(subscription, type, since, until, after=after, limit=limit + 1)
    found = await hub.store.attempts.find_dead_letters(query)
    page = found[:limit]
    more = len(found) > limit
    return DeadLetterPage(
        dead_letters=[dead_letter_out(dl) for dl in page],
        next_cursor=encode_cursor(page[-1].dead_at, page[-1].delivery_id) if more else None,
    )


@router.get(
    "/{delivery_id}",
    response_model=DeadLetterDetail,
    responses={404: error_response("no dead letter with that delivery id")},
    summary="one dead letter (replayed or not), its event and every attempt",
)
async def get_dead_letter(
    hub: AdminHub, delivery_id: Annotated[str, Path(pattern=DELIVERY_ID_PATTERN)]
) -> DeadLetterDetail:
    dl = await hub.store.attempts.dead_letter(delivery_id)
    if dl is None:
        raise NotFound(f"no dead letter with delivery id {delivery_id!r}")
    attempts = await hub.store.attempts.for_delivery(delivery_id)
    return DeadLetterDetail(
        **dead_letter_out(dl).model_dump(),
        replayed_at=dl.replayed_at,
        event=EventOut(attributes=dl.attributes, data_base64=base64.b64encode(dl.data).decode("ascii")),
        attempt_log=[attempt_out(a) for a in attempts],
    )


@router.post(
    "/replay",
    response_model=Replayed,
    responses={404: error_response("no such subscription")},
    summary="replay dead letters through the normal retry path",
)
async def replay(hub: AdminHub, body: DeadLetterSelector) -> Replayed:
    query = _query(body)
    if body.subscription is not None:
        await find_subscription(hub, body.subscription)
    return Replayed(replayed=await hub.dead_letters.replay(query))


@router.post("/purge", response_model=Purged, summary="delete dead letters for good")
async def purge(hub: AdminHub, body: DeadLetterSelector) -> Purged:
    return Purged(purged=await hub.dead_letters.purge(_query(body)))
