"""The state store: ingest records (and, with fan-out, the delivery log)."""

from hookhub.store.base import ClaimResult, EventKey, IngestRecord, Store, StoreUnavailable
from hookhub.store.sql import SqlStore


def open_store(url: str) -> Store:
    """The store for a `sqlite:///...` or `postgresql://...` URL."""
    return SqlStore(url)


__all__ = ["ClaimResult", "EventKey", "IngestRecord", "SqlStore", "Store", "StoreUnavailable", "open_store"]
