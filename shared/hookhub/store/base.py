"""The store's interfaces, one per concern, and the two ways a store call fails.

Deduplication is a claim: the first request to insert `(source, id)` owns the event and
publishes it; any other copy, concurrent or later, sees the claim and does not publish.
A claim is `pending` until the broker confirms, then `accepted`; a failed publish releases it
so the provider's retry can try again, and a pending claim older than `stale_after` (its owner
crashed between confirm and settle) may be taken over: a duplicate is possible only across a crash.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Protocol

from hookhub.store.records import (
    AttemptRecord,
    ClaimResult,
    DeadLetter,
    DeadLetterQuery,
    DeliveryState,
    EventKey,
    EventTypeSeen,
    IngestRecord,
    PullReceipt,
    Rejection,
    ReplayJob,
    StateRecord,
    StoredSubscription,
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

    async def by_event_id(self, event_id: str, limit: int = 20) -> list[IngestRecord]:
        """Every ingest record with this event id, whatever its source, oldest first."""
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

    async def dead_letter(self, delivery_id: str) -> DeadLetter | None:
        """One dead letter, replayed or not."""
        ...

    async def find_dead_letters(self, query: DeadLetterQuery) -> list[DeadLetter]:
        """Dead letters not yet replayed that match `query`, oldest first, after its cursor."""
        ...

    async def purge_dead_letters(self, query: DeadLetterQuery) -> int:
        """Delete the dead letters matching `query` (replayed or not; cursor and limit ignored);
        returns how many."""
        ...

    async def dead_letter_counts(self) -> dict[str, int]:
        """Dead letters not yet replayed, per subscription (those with none are absent)."""
        ...

    async def for_delivery(self, delivery_id: str) -> list[AttemptRecord]:
        """Every attempt of one delivery, oldest first."""
        ...


class SubscriptionStates(Protocol):
    """The operator's (and a 410's) word on each subscription; absent means active."""

    async def all(self) -> dict[str, SubscriptionState]:
        """Subscriptions whose state is not active."""
        ...

    async def set(self, name: str, state: SubscriptionState, reason: str = "") -> None:
        """Pause, disable (on 410) or resume a subscription, durably (keeps `failing_since`)."""
        ...

    async def records(self) -> dict[str, StateRecord]:
        """Every row, including active subscriptions that are failing."""
        ...

    async def set_failing(self, name: str, since: float | None) -> None:
        """Record when deliveries started failing (None: they succeed again). Called on
        transitions only, so rare; a subscription without a row stays active."""
        ...

    async def forget(self, name: str) -> None:
        """Drop a deleted subscription's row."""
        ...


class SubscriptionCatalog(Protocol):
    """Subscriptions created through the admin API; every write is durable."""

    async def list(self) -> builtins.list[StoredSubscription]:
        """Every stored subscription, by name."""
        ...

    async def get(self, name: str) -> StoredSubscription | None: ...

    async def create(self, sub: StoredSubscription) -> bool:
        """False when the name exists already."""
        ...

    async def update(self, sub: StoredSubscription) -> bool:
        """Replace the subscription of that name (not its `created_at`); False when unknown."""
        ...

    async def delete(self, name: str) -> bool:
        """False when unknown."""
        ...


class ReplayJobs(Protocol):
    """Resend jobs, shared by every replica: one runs each job, another takes over a stale one."""

    async def create(self, job: ReplayJob) -> None: ...

    async def get(self, job_id: str) -> ReplayJob | None: ...

    async def list(self, subscription: str | None = None, limit: int = 50) -> builtins.list[ReplayJob]:
        """Newest first."""
        ...

    async def save_progress(
        self, job_id: str, *, scanned: int, sent: int, cursor: str | None, owner: str
    ) -> bool:
        """Record progress and a heartbeat; False when the job no longer runs under `owner`
        (cancelled or taken over): the caller must stop."""
        ...

    async def finish(self, job_id: str, state: str, error: str | None = None) -> None:
        """End a job (done or failed); a cancelled job stays cancelled."""
        ...

    async def cancel(self, job_id: str) -> ReplayJob | None:
        """Queued or running → cancelled; the job as it now stands, None if unknown."""
        ...

    async def claim(self, owner: str, stale_after: float) -> ReplayJob | None:
        """Atomically take a queued job, or a running one whose heartbeat is older than
        `stale_after` seconds, marking it running under `owner`; None when there is none."""
        ...


class Observations(Protocol):
    """What the ingest side saw: recent rejections, and the event types each origin sends."""

    async def record_rejections(self, rejections: Sequence[Rejection], keep_per_provider: int = 1000) -> None:
        """Append, keeping only the newest `keep_per_provider` of each provider."""
        ...

    async def rejections(self, provider: str | None = None, limit: int = 100) -> builtins.list[Rejection]:
        """Newest first."""
        ...

    async def count_types(self, seen: Sequence[EventTypeSeen]) -> None:
        """Add each `count` to the stored one; `last_seen` becomes the later of the two."""
        ...

    async def event_types(self, origin: str | None = None) -> builtins.list[EventTypeSeen]: ...


class PullReceipts(Protocol):
    """The receipts handed to pull consumers with their events."""

    async def issue(self, receipts: Sequence[PullReceipt]) -> None:
        """Durable on return: call before handing the events out."""
        ...

    async def acknowledge(self, subscription: str, receipts: Sequence[str]) -> builtins.list[PullReceipt]:
        """Mark acked those of `receipts` issued for `subscription` and not yet acked; returns
        them (unknown receipts, other subscriptions' and repeated acks are ignored)."""
        ...

    async def get(self, receipt: str) -> PullReceipt | None: ...

    async def forget(self, before: float) -> int:
        """Delete receipts issued before `before`; returns how many."""
        ...


class Store(Protocol):
    """The concerns over one database, and its lifecycle."""

    @property
    def claims(self) -> ClaimStore: ...

    @property
    def attempts(self) -> AttemptLog: ...

    @property
    def subscriptions(self) -> SubscriptionStates: ...

    @property
    def catalog(self) -> SubscriptionCatalog: ...

    @property
    def jobs(self) -> ReplayJobs: ...

    @property
    def observations(self) -> Observations: ...

    @property
    def receipts(self) -> PullReceipts: ...

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
    "DeadLetterQuery",
    "DeliveryState",
    "EventKey",
    "EventTypeSeen",
    "IngestRecord",
    "Observations",
    "PullReceipt",
    "PullReceipts",
    "Rejection",
    "ReplayJob",
    "ReplayJobs",
    "StateRecord",
    "Store",
    "StoreRejected",
    "StoreUnavailable",
    "StoredSubscription",
    "SubscriptionCatalog",
    "SubscriptionState",
    "SubscriptionStates",
]
