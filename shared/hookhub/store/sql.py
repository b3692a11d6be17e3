"""The store on SQLAlchemy Core: SQLite (the default, a file) and PostgreSQL (production)."""

from __future__ import annotations

import asyncio

from hookhub.store.attempts import SqlAttemptLog
from hookhub.store.catalog import SqlSubscriptionCatalog
from hookhub.store.claims import SqlClaimStore
from hookhub.store.engine import PING_TIMEOUT, Database
from hookhub.store.jobs import SqlReplayJobs
from hookhub.store.observations import SqlObservations
from hookhub.store.receipts import SqlPullReceipts
from hookhub.store.subscriptions import SqlSubscriptionStates


class SqlStore:
    """The `Store` over one database: every concern sharing its engines."""

    def __init__(self, url: str, *, stale_after: float = 60.0, ping_timeout: float = PING_TIMEOUT) -> None:
        self.url = url
        self.db = Database(url, ping_timeout=ping_timeout)
        self.claims = SqlClaimStore(self.db, stale_after)
        self.attempts = SqlAttemptLog(self.db)
        self.subscriptions = SqlSubscriptionStates(self.db)
        self.catalog = SqlSubscriptionCatalog(self.db)
        self.jobs = SqlReplayJobs(self.db)
        self.observations = SqlObservations(self.db)
        self.receipts = SqlPullReceipts(self.db)

    async def start(self) -> None:
        await self.db.create_schema()

    async def ping(self) -> bool:
        return await self.db.ping()

    async def close(self) -> None:
        await asyncio.to_thread(self.claims.close)
        await asyncio.to_thread(self.attempts.close)
        self.db.dispose()
