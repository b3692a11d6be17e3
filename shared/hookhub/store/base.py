"""The store interface: the ingest record of every event (dedup now, tracing later).

Deduplication is a claim: the first request to insert `(source, id)` owns the event and
publishes it; any other copy, concurrent or later, sees the claim and does not publish.
A claim is `pending` until the broker confirms, then `accepted`; a failed publish releases it
so the provider's retry can try again, and a pending claim older than `stale_after` (its owner
crashed between confirm and settle) may be taken over: a duplicate is possible only across a crash.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

EventKey = tuple[str, str]  # (source, id)


class ClaimResult(enum.Enum):
    NEW = "new"  # this caller owns the event and must publish it
    DUPLICATE = "duplicate"  # already accepted: answer 200 "duplicate"
    IN_FLIGHT = "in_flight"  # another process is publishing it right now


@dataclass(slots=True)
class IngestRecord:
    source: str
    event_id: str
    type: str
    origin: str  # the provider or producer name that received it
    correlation_id: str
    received_at: float  # unix seconds
    status: str = "pending"  # pending | accepted

    @property
    def key(self) -> EventKey:
        return (self.source, self.event_id)


class StoreUnavailable(Exception):
    """The store could not be reached or written."""


class Store(ABC):
    @abstractmethod
    async def start(self) -> None:
        """Create the schema if needed. Raises StoreUnavailable when unreachable."""

    @abstractmethod
    async def claim(self, records: Sequence[IngestRecord]) -> list[ClaimResult]:
        """Claim each record's key; results in the same order as `records`."""

    @abstractmethod
    async def settle(self, keys: Sequence[EventKey]) -> None:
        """Mark claims accepted: the broker confirmed their events."""

    @abstractmethod
    async def release(self, keys: Sequence[EventKey]) -> None:
        """Drop pending claims whose publish failed, so a retry can claim them again."""

    @abstractmethod
    async def ingest_record(self, key: EventKey) -> IngestRecord | None:
        """The record for one event, or None."""

    @abstractmethod
    async def records_by_correlation(self, correlation_id: str, limit: int = 100) -> list[IngestRecord]:
        """Every ingest record sharing a correlation id, oldest first."""

    @abstractmethod
    async def ping(self) -> bool:
        """True while the store answers."""

    @abstractmethod
    async def close(self) -> None:
        """Flush pending writes and disconnect."""
