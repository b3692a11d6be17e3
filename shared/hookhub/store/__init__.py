"""The state store: ingest claims, the attempt log with its dead letters, subscription states."""

from hookhub.store.base import (
    AttemptLog,
    ClaimStore,
    Observations,
    PullReceipts,
    ReplayJobs,
    Store,
    StoreRejected,
    StoreUnavailable,
    SubscriptionCatalog,
    SubscriptionStates,
)
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
    "SqlStore",
    "StateRecord",
    "Store",
    "StoreRejected",
    "StoreUnavailable",
    "StoredSubscription",
    "SubscriptionCatalog",
    "SubscriptionState",
    "SubscriptionStates",
    "open_store",
]
