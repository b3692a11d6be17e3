"""Subscriptions created through the admin API: rare writes, all durable, so a subscription the
API confirmed exists after any crash."""

from __future__ import annotations

import builtins
import json

from sqlalchemy import delete, select, update

from hookhub.store.engine import Database
from hookhub.store.records import StoredSubscription
from hookhub.store.schema import stored_subscription, stored_subscriptions

_T = stored_subscriptions


def _config(sub: StoredSubscription) -> str:
    return json.dumps(sub.config, separators=(",", ":"), sort_keys=True)


class SqlSubscriptionCatalog:
    """The `SubscriptionCatalog` over SQLite or PostgreSQL."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def list(self) -> builtins.list[StoredSubscription]:
        def run() -> builtins.list[StoredSubscription]:
            with self._db.engine.connect() as conn:
                rows = conn.execute(select(_T).order_by(_T.c.name)).all()
            return [stored_subscription(r._mapping) for r in rows]

        return await self._db.run(run, "subscription catalog read")

    async def get(self, name: str) -> StoredSubscription | None:
        def run() -> StoredSubscription | None:
            with self._db.engine.connect() as conn:
                row = conn.execute(select(_T).where(_T.c.name == name)).first()
            return stored_subscription(row._mapping) if row else None

        return await self._db.run(run, "subscription catalog read")

    async def create(self, sub: StoredSubscription) -> bool:
        def run() -> bool:
            stmt = (
                self._db.insert(_T)
                .values(
                    {
                        _T.c.name: sub.name,
                        _T.c.config: _config(sub),
                        _T.c.created_at: sub.created_at,
                        _T.c.updated_at: sub.updated_at,
                        _T.c.previous_secret: sub.previous_secret,
                        _T.c.previous_secret_expires_at: sub.previous_secret_expires_at,
                    }
                )
                .on_conflict_do_nothing(index_elements=[_T.c.name])
                .returning(_T.c.name)  # psycopg reports no row count for an INSERT
            )
            with self._db.durable() as conn:
                return conn.execute(stmt).first() is not None

        return await self._db.run(run, "subscription catalog write")

    async def update(self, sub: StoredSubscription) -> bool:
        def run() -> bool:
            stmt = (
                update(_T)
                .where(_T.c.name == sub.name)
                .values(
                    {
                        _T.c.config: _config(sub),
                        _T.c.updated_at: sub.updated_at,
                        _T.c.previous_secret: sub.previous_secret,
                        _T.c.previous_secret_expires_at: sub.previous_secret_expires_at,
                    }
                )
            )
            with self._db.durable() as conn:
                return bool(conn.execute(stmt).rowcount == 1)

        return await self._db.run(run, "subscription catalog write")

    async def delete(self, name: str) -> bool:
        def run() -> bool:
            with self._db.durable() as conn:
                return bool(conn.execute(delete(_T).where(_T.c.name == name)).rowcount == 1)

        return await self._db.run(run, "subscription catalog write")
