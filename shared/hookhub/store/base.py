"""The store's interfaces, one per concern, and the two ways a store call fails.

Deduplication is a claim: the first request to insert `(source, id)` owns the event and
publishes it; any other copy, concurrent or later, sees the claim and does not publish.
A claim is `pending` until the broker confirms, then `accepted`; a failed publish releases it
so the provider's retry can try again, and a pending claim older than `stale_after` (its owner
crashed between confirm and settle) may be taken over: a duplicate is possible only across a crash.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from hookhub.store.records import (
    AttemptRecord,
    ClaimResult,
    DeadLetter,
    DeliveryState,
    EventKey,
    IngestRecord,
    SubscriptionState,
)


class StoreUnavailable(Exception):
    """The store could not be reached or written: try again later."""


class StoreRejected(ValueError):
    """The database refused this record itself (a NUL character, an over-long or unencodable
    value): retrying will not help. Other callers' writes in the same batch are not affected."""


class ClaimStore(Protocol):
    """The ingest record of every event: dedup now, tracing by correlation id."""

    async def claim(self, records: Sequence[IngestRecord]) -> list[ClaimResult]:
        """Claim each record's key; results in the same order as `records`."""
        ...

    async def settle(self, keys: Sequence[EventKey]) -> None:
        """Mark claims accepted: the broker confirmed their events."""
        ...

    async def release(self, keys: Sequence[EventKey]) -> None:
        """Drop pending claims whose publish failed, so a retry can claim them again."""
        ...

    async def record(self, key: EventKey) -> IngestRecord | None:
        """The record for one event, or None."""
        ...

    async def by_correlation(self, correlation_id: str, limit: int = 100) -> list[IngestRecord]:
        """Every ingest record sharing a correlation id, oldest first."""
        ...


class AttemptLog(Protocol):
    """Every delivery attempt, and the dead letters kept for replay."""

    async def record(self, attempt: AttemptRecord, dead_letter: DeadLetter | None = None) -> None:
        """Log an attempt (and its dead letter, if it ended there) before the broker ack.

        Once it returns, the write survives a crash of this process; one that carries a dead
        letter also survives a crash of the database server (its commit waits for the disk),
        since after the ack the dead letter is the event's only copy.
        """
        ...

    async def for_event(self, source: str, event_id: str) -> list[AttemptRecord]:
        """Every attempt for one event, all subscriptions, oldest first."""
        ...

    async def delivery_state(self, delivery_id: str) -> DeliveryState:
        """Attempts made so far for one delivery, and when its pending retry is due."""
        ...

    async def dead_letters(self, subscription: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Dead letters not yet replayed, oldest first."""
        ...

    async def mark_replayed(self, delivery_ids: Sequence[str]) -> int:
        """Take dead letters off the list once their replay is published; returns how many.

        A replayed delivery that dies again becomes a dead letter again (same delivery id).
        """
        ...


class SubscriptionStates(Protocol):
    """The operator's (and a 410's) word on each subscription; absent means active."""

    async def all(self) -> dict[str, SubscriptionState]:
        """Subscriptions whose state is not active."""
        ...

    async def set(self, name: str, state: SubscriptionState, reason: str = "") -> None:
        """Pause, disable (on 410) or resume a subscription, durably."""
        ...


class Store(Protocol):
    """The three concerns over one database, and its lifecycle."""

    @property
    def claims(self) -> ClaimStore: ...

    @property
    def attempts(self) -> AttemptLog: ...

    @property
    def subscriptions(self) -> SubscriptionStates: ...

    async def start(self) -> None:
        """Create the schema if needed. Raises StoreUnavailable when unreachable."""
        ...

    async def ping(self) -> bool:
        """True while the database answers; concurrent callers share one bounded check."""
        ...

    async def close(self) -> None:
        """Flush pending writes and disconnect."""
        ...


__all__ = [
    "AttemptLog",
    "AttemptRecord",
    "ClaimResult",
    "ClaimStore",
    "DeadLetter",
    "DeliveryState",
    "EventKey",
    "IngestRecord",
    "Store",
    "StoreRejected",
    "StoreUnavailable",
    "SubscriptionState",
    "SubscriptionStates",
]
