"""The ingest path shared by provider webhooks and the producer API: dedup, publish, settle.

Order matters for the SPEC's promise ("a 2xx means durable, a duplicate is never published
twice"): claim the event's key in the store, publish the claimed events to the broker and await
the confirm, answer, then mark the claims accepted in the background (batched). A failed publish
releases the claims so the provider's retry is not mistaken for a duplicate.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Sequence

from hookhub.broker.base import Broker, BrokerUnavailable
from hookhub.errors import Unavailable, Unprocessable
from hookhub.events import Event
from hookhub.store.base import ClaimResult, EventKey, IngestRecord, Store, StoreUnavailable

log = logging.getLogger(__name__)

IN_FLIGHT_POLL_SECONDS = 0.02
MAX_ATTRIBUTE_BYTES = 255  # AMQP short strings (routing key) and the store's key columns


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"


class Ingestor:
    """Makes events durable exactly once per (source, id) in normal operation."""

    def __init__(self, broker: Broker, store: Store, publish_timeout: float = 5.0) -> None:
        self.broker = broker
        self.store = store
        self.publish_timeout = publish_timeout
        # events this process is ingesting right now: a concurrent copy waits for the first
        self._in_flight: dict[EventKey, asyncio.Future[Outcome | None]] = {}
        self._settling: set[asyncio.Task[None]] = set()

    async def ingest(self, events: Sequence[Event], origin: str) -> list[Outcome]:
        """Accept every event durably (or know it is a duplicate); all-or-nothing on failure.

        Raises `Unavailable` (503) when the store or the broker cannot make them durable.
        """
        for event in events:
            _check_lengths(event)
        outcomes: dict[EventKey, Outcome] = {}
        pending = _unique(events)
        deadline = time.monotonic() + self.publish_timeout
        while pending:
            pending = await self._ingest_round(pending, origin, outcomes, deadline)
        return [outcomes[e.key] for e in events]

    async def _ingest_round(
        self, events: list[Event], origin: str, outcomes: dict[EventKey, Outcome], deadline: float
    ) -> list[Event]:
        """One attempt: returns the events that must go round again (a contested claim freed up)."""
        mine: list[Event] = []
        waits: list[tuple[Event, asyncio.Future[Outcome | None]]] = []
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
                outcomes[event.key] = Outcome.DUPLICATE
        if retry and time.monotonic() >= deadline:
            raise Unavailable("event is being ingested by another request; retry")
        return retry

    async def _claim_and_publish(
        self, events: list[Event], origin: str, outcomes: dict[EventKey, Outcome], deadline: float
    ) -> list[Event]:
        now = time.time()
        records = [IngestRecord(e.source, e.id, e.type, origin, e.correlationid, now) for e in events]
        try:
            claims = await self.store.claim(records)
        except StoreUnavailable as exc:
            log.warning("store unavailable during ingest: %s", exc)
            raise Unavailable("store unavailable") from exc

        to_publish = [e for e, c in zip(events, claims, strict=True) if c is ClaimResult.NEW]
        contested = [e for e, c in zip(events, claims, strict=True) if c is ClaimResult.IN_FLIGHT]
        for event, claim in zip(events, claims, strict=True):
            if claim is ClaimResult.DUPLICATE:
                outcomes[event.key] = Outcome.DUPLICATE

        if to_publish:
            try:
                await self.broker.publish(to_publish, timeout=max(0.1, deadline - time.monotonic()))
            except BrokerUnavailable as exc:
                await self._release([e.key for e in to_publish])
                raise Unavailable("broker unavailable") from exc
            except BaseException:
                await self._release([e.key for e in to_publish])
                raise
            for event in to_publish:
                outcomes[event.key] = Outcome.ACCEPTED
            self._settle_later([e.key for e in to_publish])

        if contested:
            return await self._await_other_replica(contested, outcomes, deadline)
        return []

    async def _await_other_replica(
        self, events: list[Event], outcomes: dict[EventKey, Outcome], deadline: float
    ) -> list[Event]:
        """Another process holds the claim: wait until it settles (duplicate) or lets go (retry)."""
        waiting = list(events)
        while waiting and time.monotonic() < deadline:
            await asyncio.sleep(IN_FLIGHT_POLL_SECONDS)
            still: list[Event] = []
            freed: list[Event] = []
            for event in waiting:
                try:
                    record = await self.store.ingest_record(event.key)
                except StoreUnavailable as exc:
                    raise Unavailable("store unavailable") from exc
                if record is None:
                    freed.append(event)
                elif record.status == "accepted":
                    outcomes[event.key] = Outcome.DUPLICATE
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
            await self.store.release(keys)
        except StoreUnavailable:
            # the claims stay pending and become stale: a retry after `stale_after` takes them over
            log.warning("could not release %d claims after a failed publish", len(keys))

    def _settle_later(self, keys: list[EventKey]) -> None:
        task = asyncio.get_running_loop().create_task(self._settle(keys))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, keys: list[EventKey]) -> None:
        try:
            await self.store.settle(keys)
        except StoreUnavailable:
            # harmless: the claim stays pending, so a late retry waits then takes it over
            log.warning("could not mark %d events accepted", len(keys))

    async def drain(self) -> None:
        """Wait for background settles (at shutdown)."""
        if self._settling:
            await asyncio.gather(*list(self._settling), return_exceptions=True)


def _unique(events: Sequence[Event]) -> list[Event]:
    """Each key once: a batch carrying the same event twice publishes it once."""
    seen: set[EventKey] = set()
    unique = []
    for event in events:
        if event.key not in seen:
            seen.add(event.key)
            unique.append(event)
    return unique


def _check_lengths(event: Event) -> None:
    """Refuse (422) attributes the broker or store could not carry, before anything is written."""
    for name in ("id", "source", "type"):
        if len(getattr(event, name).encode("utf-8")) > MAX_ATTRIBUTE_BYTES:
            raise Unprocessable(
                f"event {name} longer than {MAX_ATTRIBUTE_BYTES} bytes", detail={"attribute": name}
            )
