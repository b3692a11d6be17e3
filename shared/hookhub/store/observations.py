"""What the ingest side saw, for operators: each provider's latest rejections (bounded per
provider, so a flood of bad requests cannot grow the table) and the event types each origin
sends. Callers batch their writes; each batch is one durable transaction."""

from __future__ import annotations

import builtins
from collections.abc import Sequence

from sqlalchemy import and_, case, delete, insert, or_, select
from sqlalchemy.engine import Connection

from hookhub.store.engine import Database
from hookhub.store.records import EventTypeSeen, Rejection
from hookhub.store.schema import event_type_seen, event_types, rejection, rejections, short

_R, _E = rejections, event_types


def _trim(conn: Connection, provider: str, keep: int) -> None:
    """Delete all but the newest `keep` rejections of `provider`: everything from the first row
    past them, in (at, id) order."""
    newest_first = (
        select(_R.c.at, _R.c.id)
        .where(_R.c.provider == provider)
        .order_by(_R.c.at.desc(), _R.c.id.desc())
        .offset(keep)
        .limit(1)
    )
    cut = conn.execute(newest_first).first()
    if cut is not None:
        older = or_(_R.c.at < cut.at, and_(_R.c.at == cut.at, _R.c.id <= cut.id))
        conn.execute(delete(_R).where(_R.c.provider == provider, older))


def _merged(seen: Sequence[EventTypeSeen]) -> builtins.list[EventTypeSeen]:
    """One row per (origin, type), in key order so concurrent upserts lock rows alike."""
    merged: dict[tuple[str, str], EventTypeSeen] = {}
    for s in seen:
        key = (s.origin, s.type)
        prior = merged.get(key)
        if prior is None:
            merged[key] = EventTypeSeen(s.origin, s.type, s.count, s.last_seen)
        else:
            prior.count += s.count
            prior.last_seen = max(prior.last_seen, s.last_seen)
    return [merged[key] for key in sorted(merged)]


class SqlObservations:
    """The `Observations` over SQLite or PostgreSQL."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def record_rejections(self, rejections: Sequence[Rejection], keep_per_provider: int = 1000) -> None:
        if not rejections:
            return
        rows = [
            {
                _R.c.provider.name: r.provider,
                _R.c.at.name: r.at,
                _R.c.status.name: r.status,
                _R.c.reason.name: short(r.reason),
            }
            for r in rejections
        ]
        providers = sorted({r.provider for r in rejections})

        def run() -> None:
            with self._db.durable() as conn:
                conn.execute(insert(_R), rows)
                for provider in providers:
                    _trim(conn, provider, max(keep_per_provider, 0))

        await self._db.run(run, "rejection write")

    async def rejections(self, provider: str | None = None, limit: int = 100) -> builtins.list[Rejection]:
        def run() -> builtins.list[Rejection]:
            stmt = select(_R.c.provider, _R.c.at, _R.c.status, _R.c.reason)
            if provider is not None:
                stmt = stmt.where(_R.c.provider == provider)
            stmt = stmt.order_by(_R.c.at.desc(), _R.c.id.desc()).limit(max(limit, 0))
            with self._db.engine.connect() as conn:
                return [rejection(r._mapping) for r in conn.execute(stmt)]

        return await self._db.run(run, "rejection read")

    async def count_types(self, seen: Sequence[EventTypeSeen]) -> None:
        rows = [
            {_E.c.origin.name: s.origin, _E.c.type.name: s.type, "count": s.count, "last_seen": s.last_seen}
            for s in _merged(seen)
        ]
        if not rows:
            return

        def run() -> None:
            stmt = self._db.insert(_E)
            stmt = stmt.on_conflict_do_update(
                index_elements=[_E.c.origin, _E.c.type],
                set_={
                    _E.c.count.name: _E.c.count + stmt.excluded[_E.c.count.name],
                    _E.c.last_seen.name: case(
                        (
                            stmt.excluded[_E.c.last_seen.name] > _E.c.last_seen,
                            stmt.excluded[_E.c.last_seen.name],
                        ),
                        else_=_E.c.last_seen,
                    ),
                },
            )
            with self._db.durable() as conn:
                conn.execute(stmt, rows)

        await self._db.run(run, "event type write")

    async def event_types(self, origin: str | None = None) -> builtins.list[EventTypeSeen]:
        def run() -> builtins.list[EventTypeSeen]:
            stmt = select(_E)
            if origin is not None:
                stmt = stmt.where(_E.c.origin == origin)
            stmt = stmt.order_by(_E.c.origin, _E.c.type)
            with self._db.engine.connect() as conn:
                return [event_type_seen(r._mapping) for r in conn.execute(stmt)]

        return await self._db.run(run, "event type read")
