"""What the store keeps: plain records, one dataclass field per table column (see schema.py)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hookhub.events import Event

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

    @classmethod
    def of(
        cls,
        subscription: str,
        delivery_id: str,
        event: Event,
        *,
        attempt: int,
        attempted_at: float,
        status_code: int | None,
        latency_ms: float,
        error: str | None,
        verdict: str,
        next_attempt_at: float | None = None,
    ) -> AttemptRecord:
        """An attempt of `event`, named by the event's own attributes (push and pull alike)."""
        return cls(
            delivery_id=delivery_id,
            subscription=subscription,
            source=event.source,
            event_id=event.id,
            event_type=event.type,
            correlation_id=event.correlationid,
            attempt=attempt,
            attempted_at=attempted_at,
            status_code=status_code,
            latency_ms=latency_ms,
            error=error,
            verdict=verdict,
            next_attempt_at=next_attempt_at,
        )


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

    @classmethod
    def after(cls, last: AttemptRecord, event: Event, now: float) -> DeadLetter:
        """The replayable dead letter of a delivery whose last attempt was `last`."""
        return cls(
            delivery_id=last.delivery_id,
            subscription=last.subscription,
            source=last.source,
            event_id=last.event_id,
            event_type=last.event_type,
            correlation_id=last.correlation_id,
            attributes=event.attributes(),
            data=event.data,
            attempts=last.attempt,
            last_status=last.status_code,
            last_error=last.error,
            dead_at=now,
        )


class SubscriptionState(enum.Enum):
    ACTIVE = "active"
    PAUSED = "paused"  # by an operator: events wait in the queue
    DISABLED = "disabled"  # the subscriber answered 410: events wait until it is resumed


@dataclass(slots=True)
class StateRecord:
    """A subscription's state row, with when its deliveries started failing (auto-disable)."""

    state: SubscriptionState
    reason: str
    updated_at: float
    failing_since: float | None = None  # first failed attempt since the last success


@dataclass(slots=True)
class StoredSubscription:
    """A subscription created through the admin API (file ones live in hookhub.yaml)."""

    name: str
    config: dict[str, Any]  # SubscriptionConfig.model_dump(mode="json") with secrets in clear
    created_at: float
    updated_at: float
    previous_secret: str | None = None  # still signed with, until:
    previous_secret_expires_at: float | None = None


@dataclass(slots=True)
class DeadLetterQuery:
    """Which dead letters to list or purge; every filter given must match."""

    subscription: str | None = None
    type: str | None = None  # exact event type
    since: float | None = None  # dead_at >= since
    until: float | None = None  # dead_at < until
    delivery_ids: Sequence[str] | None = None
    after: tuple[float, str] | None = None  # keyset cursor (dead_at, delivery_id), oldest first
    limit: int = 100


@dataclass(slots=True)
class ReplayJob:
    """A resend of a subscription's archived interval, resumable from its cursor."""

    id: str  # uuid4 hex
    subscription: str
    start: float  # interval [start, end) on event time
    end: float
    state: str  # queued | running | done | cancelled | failed
    created_at: float
    updated_at: float
    scanned: int = 0  # archived events read
    sent: int = 0  # matched and published to the subscription's queue
    error: str | None = None
    cursor: str | None = None  # opaque archive position to resume from
    owner: str | None = None  # the process running it
    heartbeat_at: float | None = None
    finished_at: float | None = None


# a replay job's states: queued and running ones are unfinished
JOB_QUEUED, JOB_RUNNING = "queued", "running"
JOB_DONE, JOB_CANCELLED, JOB_FAILED = "done", "cancelled", "failed"


@dataclass(slots=True)
class Rejection:
    """An ingest request a provider's endpoint refused, for the operator to see why."""

    provider: str
    at: float
    status: int
    reason: str  # never a secret


@dataclass(slots=True)
class EventTypeSeen:
    """How often one origin sent one event type, and when last."""

    origin: str  # provider or producer name
    type: str
    count: int
    last_seen: float


@dataclass(slots=True)
class PullReceipt:
    """An event handed to a pull consumer, to be acknowledged by this opaque id."""

    receipt: str  # opaque id handed to the consumer
    subscription: str
    delivery_id: str
    attempt: int
    issued_at: float
    acked_at: float | None = None
