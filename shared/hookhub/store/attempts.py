"""The attempt log and its dead letters, on a writer thread of their own.

Kept off the claims' thread so no claim ever waits for a dead letter's fsync, and so many
deliveries finishing together share one transaction.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, delete, func, or_, select, update

from hookhub.store.engine import Database, Writer
from hookhub.store.records import RETRY, AttemptRecord, DeadLetter, DeadLetterQuery, DeliveryState
from hookhub.store.schema import (
    MAX_ERROR_CHARS,
    attempt_record,
    column_list,
    dead_letter,
    dead_letters,
    delivery_attempts,
    names,
    recordset,
    short,
)

_A, _D = delivery_attempts, dead_letters
_ATTEMPT = [c for c in _A.c if not c.primary_key]  # every column but the log's own row id
_ATTEMPT_NAMES = names(_ATTEMPT)
_attempt_values = attrgetter(*_ATTEMPT_NAMES)
_ERROR_AT = _ATTEMPT_NAMES.index(_A.c.error.name)
_DEAD = [c for c in _D.c if c is not _D.c.replayed_at]
_DEAD_NAMES = names(_DEAD)
_dead_values = attrgetter(*_DEAD_NAMES)
# A dead letter recorded twice (a redelivery after a crash) overwrites itself; one that dies
# again after a replay (same delivery id) is listed again, with its new last attempt.
_DEAD_UPSERT = f" ON CONFLICT ({_D.c.delivery_id.name}) DO UPDATE SET " + ", ".join(
    [
        *(
            f"{c.name} = excluded.{c.name}"
            for c in (_D.c.attempts, _D.c.last_status, _D.c.last_error, _D.c.dead_at)
        ),
        f"{_D.c.replayed_at.name} = NULL",
    ]
)
MAX_IDS_PER_STATEMENT = 500

_Write = tuple[AttemptRecord, DeadLetter | None]


def _filters(query: DeadLetterQuery) -> list[ColumnElement[bool]]:
    """The query's selectors (not its cursor or limit), as WHERE conditions."""
    conditions: list[ColumnElement[bool]] = []
    if query.subscription is not None:
        conditions.append(_D.c.subscription == query.subscription)
    if query.type is not None:
        conditions.append(_D.c.event_type == query.type)
    if query.since is not None:
        conditions.append(_D.c.dead_at >= query.since)
    if query.until is not None:
        conditions.append(_D.c.dead_at < query.until)
    return conditions


def _id_chunks(query: DeadLetterQuery) -> list[list[str] | None]:
    """The query's delivery ids in chunks a statement can bind; [None] when it names none."""
    if query.delivery_ids is None:
        return [None]
    ids = list(dict.fromkeys(query.delivery_ids))
    return [ids[start : start + MAX_IDS_PER_STATEMENT] for start in range(0, len(ids), MAX_IDS_PER_STATEMENT)]


def _page(query: DeadLetterQuery, ids: list[str] | None) -> Select[Any]:
    """One page of unreplayed dead letters, in keyset order (dead_at, delivery_id)."""
    stmt = select(_D).where(_D.c.replayed_at.is_(None), *_filters(query))
    if ids is not None:
        stmt = stmt.where(_D.c.delivery_id.in_(ids))
    if query.after is not None:
        dead_at, delivery_id = query.after
        stmt = stmt.where(
            or_(_D.c.dead_at > dead_at, and_(_D.c.dead_at == dead_at, _D.c.delivery_id > delivery_id))
        )
    return stmt.order_by(_D.c.dead_at, _D.c.delivery_id).limit(max(query.limit, 0))


def _attempt_row(a: AttemptRecord) -> tuple[Any, ...]:
    row: tuple[Any, ...] = _attempt_values(a)
    if a.error is not None and len(a.error) > MAX_ERROR_CHARS:
        row = (*row[:_ERROR_AT], short(a.error), *row[_ERROR_AT + 1 :])
    return row


_DEAD_CONVERT: dict[str, Callable[[Any], Any]] = {
    _D.c.attributes.name: lambda v: json.dumps(v, separators=(",", ":")),
    _D.c.last_error.name: short,
}


def _dead_row(d: DeadLetter) -> tuple[Any, ...]:
    return tuple(
        _DEAD_CONVERT[name](value) if name in _DEAD_CONVERT else value
        for name, value in zip(_DEAD_NAMES, _dead_values(d), strict=True)
    )


class _LogPath:
    """The log's batch write, in the database's own SQL."""

    def write(
        self, cursor: Any, attempts: list[AttemptRecord], dead: list[DeadLetter], *, durable: bool
    ) -> None:
        """Insert the rows; with `durable`, the commit returns only once it is on disk."""
        raise NotImplementedError


class _SqliteLogPath(_LogPath):
    """executemany of constant statements: sqlite3 prepares each once and caches it."""

    INSERT = f"INSERT INTO {_A.name} ({column_list(_ATTEMPT)}) VALUES ({', '.join('?' * len(_ATTEMPT))})"
    DEAD = (
        f"INSERT INTO {_D.name} ({column_list(_DEAD)}) VALUES ({', '.join('?' * len(_DEAD))}){_DEAD_UPSERT}"
    )

    def write(
        self, cursor: Any, attempts: list[AttemptRecord], dead: list[DeadLetter], *, durable: bool
    ) -> None:
        # per connection, outside a transaction (sqlite3 opens one only at the first INSERT)
        cursor.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=NORMAL")
        cursor.executemany(self.INSERT, [_attempt_row(a) for a in attempts])
        if dead:
            cursor.executemany(self.DEAD, [_dead_row(d) for d in dead])


class _PostgresLogPath(_LogPath):
    """Attempts travel as one JSON parameter, as the claims do (psycopg's per-row work in
    executemany was the cost). Dead letters (rare, with binary data) keep executemany. A batch
    carrying one commits synchronously although the connection's default is off."""

    INSERT = (
        f"INSERT INTO {_A.name} ({column_list(_ATTEMPT)})"
        f" SELECT {column_list(_ATTEMPT)} FROM json_to_recordset(%s::json) AS r({recordset(_ATTEMPT)})"
    )
    DEAD = (
        f"INSERT INTO {_D.name} ({column_list(_DEAD)})"
        f" VALUES ({', '.join(['%s'] * len(_DEAD))}){_DEAD_UPSERT}"
    )

    def write(
        self, cursor: Any, attempts: list[AttemptRecord], dead: list[DeadLetter], *, durable: bool
    ) -> None:
        if durable:
            cursor.execute("SET LOCAL synchronous_commit = on")
        rows = [dict(zip(_ATTEMPT_NAMES, _attempt_row(a), strict=True)) for a in attempts]
        cursor.execute(self.INSERT, (json.dumps(rows),))
        if dead:
            cursor.executemany(self.DEAD, [_dead_row(d) for d in dead])


class SqlAttemptLog:
    """The `AttemptLog` over SQLite or PostgreSQL."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._path: _LogPath = _PostgresLogPath() if db.postgres else _SqliteLogPath()
        self.writer: Writer[_Write, None] = Writer(
            db, self._write, name="store-attempts", what="attempt log", engine=db.log_engine
        )

    async def record(self, attempt: AttemptRecord, dead_letter: DeadLetter | None = None) -> None:
        await self.writer.submit((attempt, dead_letter))

    def _write(self, writes: list[_Write]) -> list[None]:
        """Every queued attempt (and dead letter) in one transaction.

        Only a batch that carries a dead letter waits for its commit to reach the disk: once
        its broker message is acked, the dead letter is the event's only copy. Any other
        attempt is a log line (the subscriber, or the broker's rescheduled copy, holds the
        event), so it commits like the claims: safe from a crash of this process, not from a
        crash of the database server itself; an fsync per batch would cap fan-out.
        """
        attempts = [attempt for attempt, _ in writes]
        dead = [letter for _, letter in writes if letter is not None]
        with self.writer.connection.cursor() as cursor:
            self._path.write(cursor, attempts, dead, durable=bool(dead))
        return [None] * len(writes)

    async def for_event(self, source: str, event_id: str) -> list[AttemptRecord]:
        def run() -> list[AttemptRecord]:
            with self._db.engine.connect() as conn:
                rows = conn.execute(
                    select(_A)
                    .where(_A.c.source == source, _A.c.event_id == event_id)
                    .order_by(_A.c.attempted_at, _A.c.id)
                ).all()
            return [attempt_record(r._mapping) for r in rows]

        return await self._db.run(run, "attempt log read")

    async def delivery_state(self, delivery_id: str) -> DeliveryState:
        def run() -> DeliveryState:
            with self._db.engine.connect() as conn:
                last = conn.execute(
                    select(_A.c.verdict, _A.c.next_attempt_at, func.count().over())
                    .where(_A.c.delivery_id == delivery_id)
                    .order_by(_A.c.attempted_at.desc(), _A.c.id.desc())
                    .limit(1)
                ).first()
            if last is None:
                return DeliveryState(attempts=0, next_attempt_at=None)
            verdict, next_attempt_at, attempts = last
            return DeliveryState(int(attempts), next_attempt_at if verdict == RETRY else None)

        return await self._db.run(run, "attempt log read")

    async def dead_letters(self, subscription: str | None = None, limit: int = 100) -> list[DeadLetter]:
        def run() -> list[DeadLetter]:
            stmt = select(_D).where(_D.c.replayed_at.is_(None))
            if subscription is not None:
                stmt = stmt.where(_D.c.subscription == subscription)
            stmt = stmt.order_by(_D.c.dead_at, _D.c.delivery_id).limit(limit)
            with self._db.engine.connect() as conn:
                rows = conn.execute(stmt).all()
            return [dead_letter(r._mapping) for r in rows]

        return await self._db.run(run, "dead letter read")

    async def mark_replayed(self, delivery_ids: Sequence[str]) -> int:
        ids = list(dict.fromkeys(delivery_ids))

        def run() -> int:
            now = time.time()
            marked = 0
            with self._db.durable() as conn:
                for start in range(0, len(ids), MAX_IDS_PER_STATEMENT):
                    result = conn.execute(
                        update(_D)
                        .where(
                            _D.c.delivery_id.in_(ids[start : start + MAX_IDS_PER_STATEMENT]),
                            _D.c.replayed_at.is_(None),
                        )
                        .values({_D.c.replayed_at: now})
                    )
                    marked += result.rowcount
            return marked

        return await self._db.run(run, "dead letter update")

    async def dead_letter(self, delivery_id: str) -> DeadLetter | None:
        def run() -> DeadLetter | None:
            with self._db.engine.connect() as conn:
                row = conn.execute(select(_D).where(_D.c.delivery_id == delivery_id)).first()
            return dead_letter(row._mapping) if row else None

        return await self._db.run(run, "dead letter read")

    async def find_dead_letters(self, query: DeadLetterQuery) -> list[DeadLetter]:
        def run() -> list[DeadLetter]:
            found: list[DeadLetter] = []
            with self._db.engine.connect() as conn:
                for ids in _id_chunks(query):  # each chunk's first page holds its share of ours
                    found.extend(dead_letter(r._mapping) for r in conn.execute(_page(query, ids)))
            found.sort(key=lambda d: (d.dead_at, d.delivery_id))
            return found[: max(query.limit, 0)]

        return await self._db.run(run, "dead letter read")

    async def purge_dead_letters(self, query: DeadLetterQuery) -> int:
        def run() -> int:
            purged = 0
            with self._db.durable() as conn:
                for ids in _id_chunks(query):
                    stmt = delete(_D).where(*_filters(query))
                    if ids is not None:
                        stmt = stmt.where(_D.c.delivery_id.in_(ids))
                    purged += conn.execute(stmt).rowcount
            return purged

        return await self._db.run(run, "dead letter purge")

    async def dead_letter_counts(self) -> dict[str, int]:
        def run() -> dict[str, int]:
            with self._db.engine.connect() as conn:
                rows = conn.execute(
                    select(_D.c.subscription, func.count())
                    .where(_D.c.replayed_at.is_(None))
                    .group_by(_D.c.subscription)
                ).all()
            return {subscription: int(count) for subscription, count in rows}

        return await self._db.run(run, "dead letter read")

    async def for_delivery(self, delivery_id: str) -> list[AttemptRecord]:
        def run() -> list[AttemptRecord]:
            with self._db.engine.connect() as conn:
                rows = conn.execute(
                    select(_A).where(_A.c.delivery_id == delivery_id).order_by(_A.c.attempted_at, _A.c.id)
                ).all()
            return [attempt_record(r._mapping) for r in rows]

        return await self._db.run(run, "attempt log read")

    def close(self) -> None:
        self.writer.close()
