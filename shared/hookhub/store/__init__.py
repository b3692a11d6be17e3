"""The state store: ingest claims, the attempt log with its dead letters, subscription states."""

from hookhub.store.base import (
    AttemptLog,
    ClaimStore,
    Store,
    StoreRejected,
    StoreUnavailable,
    SubscriptionStates,
)
from hookhub.store.records import (
    AttemptRecord,
    ClaimResult,
    DeadLetter,
    DeliveryState,
    EventKey,
    IngestRecord,
    SubscriptionState,
)
from hookhub.store.sql import SqlStore


def open_store(url: str) -> Store:
    """The store for a `sqlite:///...` or `postgresql://...` URL."""
    return SqlStore(url)


__all__ = [
    "AttemptLog",
    "AttemptRecord",
    "ClaimResult",
    "ClaimStore",
    "DeadLetter",
    "DeliveryState",
    "EventKey",
    "IngestRecord",
    "SqlStore",
    "Store",
    "StoreRejected",
    "StoreUnavailable",
    "SubscriptionState",
    "SubscriptionStates",
    "open_store",
]
