"""`/admin/events`: trace an event by id or correlation id: its ingest record (who sent it, when,
the outcome) and every delivery attempt to every subscription."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Path, Query

from hookhub.admin.auth import AdminHub
from hookhub.admin.models import MAX_KEY, IngestOut, TraceList, TraceOut, error_response
from hookhub.admin.routes_dead_letters import attempt_out
from hookhub.errors import NotFound
from hookhub.store.records import IngestRecord

if TYPE_CHECKING:
    from hookhub.hub import Hub

router = APIRouter(prefix="/events", tags=["trace"])
MAX_TRACED = 100  # events one correlation id can bring back


async def traces(hub: Hub, records: Sequence[IngestRecord]) -> TraceList:
    attempts = await asyncio.gather(*(hub.store.attempts.for_event(r.source, r.event_id) for r in records))
    return TraceList(
        events=[
            TraceOut(
                ingest=IngestOut.model_validate(
                    {
                        "source": r.source,
                        "id": r.event_id,
                        "type": r.type,
                        "origin": r.origin,
                        "correlation_id": r.correlation_id,
                        "received_at": r.received_at,
                        "status": r.status,
                    }
                ),
                attempts=[attempt_out(a) for a in found],
            )
            for r, found in zip(records, attempts, strict=True)
        ]
    )


@router.get(
    "/{event_id}",
    response_model=TraceList,
    responses={404: error_response("no event with that id was received")},
    summary="every event with this id (one per source) and its delivery attempts",
)
async def trace_event(
    hub: AdminHub, event_id: Annotated[str, Path(min_length=1, max_length=MAX_KEY)]
) -> TraceList:
    records = await hub.store.claims.by_event_id(event_id)
    if not records:
        raise NotFound(f"no event with id {event_id[:80]!r} was received")
    return await traces(hub, records)


@router.get("", response_model=TraceList, summary="every event sharing a correlation id, oldest first")
async def trace_correlation(
    hub: AdminHub, correlation_id: Annotated[str, Query(min_length=1, max_length=MAX_KEY)]
) -> TraceList:
    return await traces(hub, await hub.store.claims.by_correlation(correlation_id, MAX_TRACED))
