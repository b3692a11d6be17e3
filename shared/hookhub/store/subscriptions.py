"""Subscription states: paused by an operator, disabled by a 410. Rare writes, all durable."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from hookhub.store.engine import Database
from hookhub.store.records import SubscriptionState
from hookhub.store.schema import subscription_states

_S = subscription_states


class SqlSubscriptionStates:
    """The `SubscriptionStates` over SQLite or PostgreSQL; a subscription without a row is active."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def all(self) -> dict[str, SubscriptionState]:
        def run() -> dict[str, SubscriptionState]:
            with self._db.engine.connect() as conn:
                rows = conn.execute(
                    select(_S.c.name, _S.c.state).where(_S.c.state != SubscriptionState.ACTIVE.value)
                ).all()
            return {name: SubscriptionState(state) for name, state in rows}

        return await self._db.run(run, "subscription state read")

    async def set(self, name: str, state: SubscriptionState, reason: str = "") -> None:
        def run() -> None:
            insert = pg_insert if self._db.postgres else sqlite_insert
            stmt = insert(_S).values(
                {_S.c.name: name, _S.c.state: state.value, _S.c.reason: reason, _S.c.updated_at: time.time()}
            )
            stmt = stmt.on_conflict_do_update(
                index_elements=[_S.c.name],
                set_={c.name: stmt.excluded[c.name] for c in (_S.c.state, _S.c.reason, _S.c.updated_at)},
            )
            with self._db.durable() as conn:
                conn.execute(stmt)

        await self._db.run(run, "subscription state write")
