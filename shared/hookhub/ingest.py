"""The ingest path shared by provider webhooks and the producer API: dedup, publish, settle.

Order matters for the SPEC's promise ("a 2xx means durable, a duplicate is never published
twice"): claim the event's key in the store, publish the claimed events to the broker and await
the confirm, answer, then mark the claims accepted in the background (batched). A failed publish
releases the claims so the provider's retry is not mistaken for a duplicate. A publish that timed
out but may still be confirmed (`PublishUnconfirmed`) answers 503 too, yet keeps its claims until
the broker decides: confirmed settles them (a retry is a duplicate), refused releases them. Were
they released at once, the retry would publish the event a second time.

Events arrive valid: `Event` refuses (422) anything the broker or the store could not carry.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Coroutine, Sequence
from typing import Any

from hookhub.broker.base import Broker, BrokerUnavailable, PublishUnconfirmed
from hookhub.errors import Unavailable, Unprocessable
from hookhub.events import Event
from hookhub.store.base import (
    ClaimResult,
    ClaimStore,
    EventKey,
    IngestRecord,
    StoreRejected,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

IN_FLIGHT_POLL_SECONDS = 0.02
MIN_PUBLISH_SECONDS = 0.1
# How long an unconfirmed publish may stay undecided before its claims are left to go stale (a
# broker resolves `confirmed` well before this; the bound only keeps a lost one from leaking).
UNCONFIRMED_WAIT_SECONDS = 300.0


class IngestResult(enum.Enum):
    """What ingest made of one event: newly accepted (202) or a duplicate of an accepted one (200)."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"


class Ingestor:
    """Makes events durable exactly once per (source, id) in normal operation."""

    def __init__(self, broker: Broker, claims: ClaimStore, publish_timeout: float = 5.0) -> None:
        self.broker = broker
        self.claims = claims
        self.publish_timeout = publish_timeout
        # events this process is ingesting right now: a concurrent copy waits for the first
        self._in_flight: dict[EventKey, asyncio.Future[IngestResult | None]] = {}
        self._settling: set[asyncio.Task[None]] = set()

    async def ingest(self, events: Sequence[Event], origin: str) -> list[IngestResult]:
        """Accept every event durably (or know it is a duplicate); all-or-nothing on failure.

        Raises `Unavailable` (503) when the store or the broker cannot make them durable, and
        `Unprocessable` (422) when the store refuses a record itself.
        """
        outcomes: dict[EventKey, IngestResult] = {}
        pending = _unique(events)
        deadline = time.monotonic() + self.publish_timeout
        while pending:
            pending = await self._ingest_round(pending, origin, outcomes, deadline)
        return [outcomes[e.key] for e in events]

    async def _ingest_round(
        self, events: list[Event], origin: str, outcomes: dict[EventKey, IngestResult], deadline: float
    ) -> list[Event]:
        """One attempt: returns the events that must go round again (a contested claim freed up)."""
        mine: list[Event] = []
        waits: list[tuple[Event, asyncio.Future[IngestResult | None]]] = []
        loop = asyncio.get_running_loop()
        for event in events:
            other = self._in_flight.get(event.key)
            if other is not None:
                waits.append((event, other))
            else:
                self._in_flight[event.key] = loop.create_future()
                mine.append(event)

        retry: list[Event] = []
        try:
            if mine:
                retry.extend(await self._claim_and_publish(mine, origin, outcomes, deadline))
        finally:
            for event in mine:
                future = self._in_flight.pop(event.key)
                if not future.done():
                    future.set_result(outcomes.get(event.key))
        for event, future in waits:
            outcome = await asyncio.shield(future)
            if outcome is None:  # the first copy failed or was contested: try again ourselves
                retry.append(event)
            else:
                outcomes[event.key] = IngestResult.DUPLICATE
        if retry and time.monotonic() >= deadline:
            raise Unavailable("event is being ingested by another request; retry")
        return retry

    async def _claim_and_publish(
        self, events: list[Event], origin: str, outcomes: dict[EventKey, IngestResult], deadline: float
    ) -> list[Event]:
        now = time.time()
        records = [IngestRecord(e.source, e.id, e.type, origin, e.correlationid, now) for e in events]
        try:
            claims = await self.claims.claim(records)
        except StoreUnavailable as exc:
            log.warning("store unavailable during ingest: %s", exc)
            raise Unavailable("store unavailable") from exc
        except StoreRejected as exc:
            log.warning("store refused an ingest record: %s", exc)
            raise Unprocessable("the store refused this event's attributes") from exc

        to_publish = [e for e, c in zip(events, claims, strict=True) if c is ClaimResult.NEW]
        contested = [e for e, c in zip(events, claims, strict=True) if c is ClaimResult.IN_FLIGHT]
        for event, claim in zip(events, claims, strict=True):
            if claim is ClaimResult.DUPLICATE:
                outcomes[event.key] = IngestResult.DUPLICATE

        if to_publish:
            keys = [e.key for e in to_publish]
            try:
                # a round that waited on another copy still gets a moment to publish
                floor = min(MIN_PUBLISH_SECONDS, self.publish_timeout)
                await self.broker.publish(to_publish, timeout=max(floor, deadline - time.monotonic()))
            except PublishUnconfirmed as exc:
                self._background(self._decide_later(keys, exc.confirmed))
                raise Unavailable("broker did not confirm in time") from exc
            except BrokerUnavailable as exc:
                await self._release(keys)
                raise Unavailable("broker unavailable") from exc
            except BaseException:
                await self._release(keys)
                raise
            for event in to_publish:
                outcomes[event.key] = IngestResult.ACCEPTED
            self._background(self._settle(keys))

        if contested:
            return await self._await_other_replica(contested, outcomes, deadline)
        return []

    async def _await_other_replica(
        self, events: list[Event], outcomes: dict[EventKey, IngestResult], deadline: float
    ) -> list[Event]:
        """Another process holds the claim: wait until it settles (duplicate) or lets go (retry)."""
        waiting = list(events)
        while waiting and time.monotonic() < deadline:
            await asyncio.sleep(IN_FLIGHT_POLL_SECONDS)
            still: list[Event] = []
            freed: list[Event] = []
            for event in waiting:
                try:
                    record = await self.claims.record(event.key)
                except StoreUnavailable as exc:
                    raise Unavailable("store unavailable") from exc
                if record is None:
                    freed.append(event)
                elif record.status == "accepted":
                    outcomes[event.key] = IngestResult.DUPLICATE
                else:
                    still.append(event)
            if freed:
                return freed + still
            waiting = still
        if waiting:
            raise Unavailable("event is being ingested by another replica; retry")
        return []

    async def _release(self, keys: list[EventKey]) -> None:
        try:
            await self.claims.release(keys)
        except (StoreUnavailable, StoreRejected):
            # the claims stay pending and become stale: a retry after `stale_after` takes them over
            log.warning("could not release %d claims after a failed publish", len(keys))

    async def _settle(self, keys: list[EventKey]) -> None:
        try:
            await self.claims.settle(keys)
        except (StoreUnavailable, StoreRejected):
            # harmless: the claim stays pending, so a late retry waits then takes it over
            log.warning("could not mark %d events accepted", len(keys))

    async def _decide_later(self, keys: list[EventKey], confirmed: asyncio.Future[bool]) -> None:
        """Settle or release the claims of an unconfirmed publish once the broker decides."""
        try:
            durable = await asyncio.wait_for(asyncio.shield(confirmed), UNCONFIRMED_WAIT_SECONDS)
        except (TimeoutError, asyncio.CancelledError):
            # undecided: leave the claims pending; a retry after `stale_after` takes them over
            log.warning("publish of %d events still unconfirmed; leaving their claims", len(keys))
            return
        except Exception:
            log.exception("unconfirmed publish of %d events failed to resolve", len(keys))
            return
        if durable:
            await self._settle(keys)
        else:
            await self._release(keys)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def drain(self) -> None:
        """Wait for background settles (at shutdown), at most `publish_timeout`.

        An unconfirmed publish still undecided then keeps its claims pending (see `_decide_later`).
        """
        if not self._settling:
            return
        _, pending = await asyncio.wait(list(self._settling), timeout=self.publish_timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


def _unique(events: Sequence[Event]) -> list[Event]:
    """Each key once: a batch carrying the same event twice publishes it once."""
    seen: set[EventKey] = set()
    unique = []
    for event in events:
        if event.key not in seen:
            seen.add(event.key)
            unique.append(event)
    return unique
