"""What the store keeps: plain records, one dataclass field per table column (see schema.py)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

EventKey = tuple[str, str]  # (source, id)

PENDING, ACCEPTED = "pending", "accepted"  # an ingest record's status
RETRY = "retry"  # the verdict whose attempt has a `next_attempt_at`


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
    status: str = PENDING  # pending | accepted

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
    verdict: str  # delivered | retry | dead | parked
    next_attempt_at: float | None = None  # unix seconds the retry is due; None unless a retry


@dataclass(slots=True)
class DeliveryState:
    """Where one delivery stands, from its attempt log."""

    attempts: int
    next_attempt_at: float | None  # of the last attempt; None if there is none or it was no retry


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
