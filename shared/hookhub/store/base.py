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


@dataclass(slots=True)
class AttemptRecord:
    """One HTTP attempt to deliver one event to one subscription."""

    delivery_id: str  # stable across attempts (the `webhook-id` the subscriber sees)
    subscription: str
    source: str
    event_id: str
    event_type: str
    correlation_id: str
    attempt: int
    attempted_at: float  # unix seconds
    status_code: int | None  # None: no HTTP answer (timeout, connection error)
    latency_ms: float
    error: str | None
    outcome: str  # delivered | retry | dead | disabled


@dataclass(slots=True)
class DeadLetter:
    """A delivery that ran out of attempts (or met a non-retryable 4xx): kept to be replayed."""

    delivery_id: str
    subscription: str
    source: str
    event_id: str
    event_type: str
    correlation_id: str
    attributes: dict[str, str]  # the CloudEvent's attributes, to rebuild it on replay
    data: bytes
    attempts: int
    last_status: int | None
    last_error: str | None
    dead_at: float
    replayed_at: float | None = None


class SubscriptionState(enum.Enum):
    ACTIVE = "active"
    PAUSED = "paused"  # by an operator: events wait in the queue
    DISABLED = "disabled"  # the subscriber answered 410: events wait until it is resumed


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

    # Delivery log (fan-out) ---------------------------------------------------------------

    @abstractmethod
    async def record_attempt(self, attempt: AttemptRecord, dead_letter: DeadLetter | None = None) -> None:
        """Durably log an attempt (and its dead letter, if it ended there) before the broker acks.

        Committed synchronously even where the ingest claims are not (PostgreSQL's
        synchronous_commit): a dead letter must survive a database crash once its message is gone.
        """

    @abstractmethod
    async def attempts_for_event(self, source: str, event_id: str) -> list[AttemptRecord]:
        """Every attempt for one event, all subscriptions, oldest first."""

    @abstractmethod
    async def attempt_count(self, delivery_id: str) -> int:
        """Attempts made so far for one delivery (the Knative path numbers attempts from it)."""

    @abstractmethod
    async def dead_letters(self, subscription: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Dead letters not yet replayed, oldest first."""

    @abstractmethod
    async def mark_replayed(self, delivery_ids: Sequence[str]) -> int:
        """Take dead letters off the list once their replay is published; returns how many.

        A replayed delivery that dies again becomes a dead letter again (same delivery id).
        """

    @abstractmethod
    async def subscription_states(self) -> dict[str, SubscriptionState]:
        """Subscriptions whose state differs from active (absent means active)."""

    @abstractmethod
    async def set_subscription_state(self, name: str, state: SubscriptionState, reason: str = "") -> None:
        """Pause, disable (on 410) or resume a subscription, durably."""
