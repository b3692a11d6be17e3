"""Subscription states: paused by an operator, disabled by a 410 or by failing too long, and
since when deliveries fail. Rare writes (on transitions), all durable."""

from __future__ import annotations

import time

from sqlalchemy import delete, select, update

from hookhub.store.engine import Database
from hookhub.store.records import StateRecord, SubscriptionState
from hookhub.store.schema import state_record, subscription_states

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

    async def records(self) -> dict[str, StateRecord]:
        def run() -> dict[str, StateRecord]:
            with self._db.engine.connect() as conn:
                rows = conn.execute(select(_S)).all()
            return {row.name: state_record(row._mapping) for row in rows}

        return await self._db.run(run, "subscription state read")

    async def set(self, name: str, state: SubscriptionState, reason: str = "") -> None:
        def run() -> None:
            stmt = self._db.insert(_S).values(
                {_S.c.name: name, _S.c.state: state.value, _S.c.reason: reason, _S.c.updated_at: time.time()}
            )
            stmt = stmt.on_conflict_do_update(  # failing_since is the deliveries' word, kept
                index_elements=[_S.c.name],
                set_={c.name: stmt.excluded[c.name] for c in (_S.c.state, _S.c.reason, _S.c.updated_at)},
            )
            with self._db.durable() as conn:
                conn.execute(stmt)

        await self._db.run(run, "subscription state write")

    async def set_failing(self, name: str, since: float | None) -> None:
        def run() -> None:
            with self._db.durable() as conn:
                if since is None:  # no row: nothing was failing
                    conn.execute(update(_S).where(_S.c.name == name).values({_S.c.failing_since: None}))
                    return
                stmt = self._db.insert(_S).values(
                    {
                        _S.c.name: name,
                        _S.c.state: SubscriptionState.ACTIVE.value,
                        _S.c.reason: "",
                        _S.c.updated_at: time.time(),
                        _S.c.failing_since: since,
                    }
                )
                stmt = stmt.on_conflict_do_update(
                    index_elements=[_S.c.name], set_={_S.c.failing_since.name: since}
                )
                conn.execute(stmt)

        await self._db.run(run, "subscription state write")

    async def forget(self, name: str) -> None:
        def run() -> None:
            with self._db.durable() as conn:
                conn.execute(delete(_S).where(_S.c.name == name))

        await self._db.run(run, "subscription state write")
