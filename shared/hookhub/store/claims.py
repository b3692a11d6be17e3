"""Ingest dedup: the claims every event costs, grouped onto one writer thread.

Every claim or settle that arrives while a batch is being written joins the next one, so many
concurrent webhooks cost a few multi-row `INSERT ... ON CONFLICT DO NOTHING RETURNING`
statements instead of one round trip each. One writer thread: on SQLite a second writer would
only queue on the file lock; on PostgreSQL a second thread lost more to the GIL than it gained
in overlapped round trips.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

from sqlalchemy import and_, delete, select, tuple_, update
from sqlalchemy.engine import Connection

from hookhub.store.engine import Database, Writer
from hookhub.store.records import ACCEPTED, PENDING, ClaimResult, EventKey, IngestRecord
from hookhub.store.schema import column_list, ingest_record, ingest_records, names, recordset

_T = ingest_records
_C = _T.c
_KEY = tuple_(_C.source, _C.event_id)
# the columns a claim takes from its record; `status` and `claimed_at` are the store's own
_CLAIMED = [_C.source, _C.event_id, _C.type, _C.origin, _C.correlation_id, _C.received_at]
_CLAIMED_NAMES = names(_CLAIMED)
_claimed_values = attrgetter(*_CLAIMED_NAMES)
_KEY_NAMES = names([_C.source, _C.event_id])
MAX_ROWS_PER_STATEMENT = 500  # SQLite: well under its bound-parameter limit

_CLAIM, _SETTLE = "claim", "settle"
_Write = tuple[str, list[Any]]  # (_CLAIM, [IngestRecord, ...]) or (_SETTLE, [EventKey, ...])


class _HotPath:
    """The two writes every event costs (claim its key; settle it once confirmed), in the
    database's own SQL, as few statements as the database allows."""

    def write(
        self, cursor: Any, settles: list[EventKey], claims: list[IngestRecord], now: float
    ) -> set[EventKey]:
        """Mark `settles` accepted and insert `claims` if absent; return the keys inserted."""
        raise NotImplementedError


class _PostgresHotPath(_HotPath):
    """One statement per batch: the rows travel as a single JSON parameter (built by the C json
    encoder; psycopg's Python list adaptation cost more), the statement text stays constant
    whatever the batch size (planned once), and a data-modifying CTE lets the settle ride along
    with the claim, atomically, in one round trip."""

    SETTLE = (
        f"UPDATE {_T.name} SET {_C.status.name} = '{ACCEPTED}'"
        f" FROM json_to_recordset(%s::json) AS k({recordset([_C.source, _C.event_id])})"
        f" WHERE {_T.name}.{_C.source.name} = k.{_C.source.name}"
        f" AND {_T.name}.{_C.event_id.name} = k.{_C.event_id.name}"
    )
    INSERT = (
        f"INSERT INTO {_T.name} ({column_list([*_CLAIMED, _C.status, _C.claimed_at])})"
        f" SELECT {column_list(_CLAIMED)}, '{PENDING}', %s"
        f" FROM json_to_recordset(%s::json) AS u({recordset(_CLAIMED)})"
        f" ON CONFLICT ({', '.join(_KEY_NAMES)}) DO NOTHING RETURNING {', '.join(_KEY_NAMES)}"
    )
    BOTH = f"WITH settled AS ({SETTLE} RETURNING 1) {INSERT}"

    def write(
        self, cursor: Any, settles: list[EventKey], claims: list[IngestRecord], now: float
    ) -> set[EventKey]:
        settle_rows = json.dumps([dict(zip(_KEY_NAMES, key, strict=True)) for key in settles])
        if not claims:
            cursor.execute(self.SETTLE, (settle_rows,))
            return set()
        claim_rows = json.dumps([dict(zip(_CLAIMED_NAMES, _claimed_values(r), strict=True)) for r in claims])
        if settles:
            cursor.execute(self.BOTH, (settle_rows, now, claim_rows))
        else:
            cursor.execute(self.INSERT, (now, claim_rows))
        return {(row[0], row[1]) for row in cursor.fetchall()}


class _SqliteHotPath(_HotPath):
    """Multi-row VALUES in chunks (SQLite has no arrays; sqlite3 caches each statement text),
    inside the caller's transaction: in-process calls, so several statements cost nothing."""

    SETTLE = (
        f"UPDATE {_T.name} SET {_C.status.name} = '{ACCEPTED}'"
        f" WHERE {_C.source.name} = ? AND {_C.event_id.name} = ?"
    )
    _ROW = f"({', '.join('?' * len(_CLAIMED))}, '{PENDING}', ?)"

    def write(
        self, cursor: Any, settles: list[EventKey], claims: list[IngestRecord], now: float
    ) -> set[EventKey]:
        if settles:
            cursor.executemany(self.SETTLE, settles)
        inserted: set[EventKey] = set()
        for start in range(0, len(claims), MAX_ROWS_PER_STATEMENT):
            chunk = claims[start : start + MAX_ROWS_PER_STATEMENT]
            sql = (
                f"INSERT INTO {_T.name} ({column_list([*_CLAIMED, _C.status, _C.claimed_at])}) VALUES "
                + ", ".join([self._ROW] * len(chunk))
                + f" ON CONFLICT ({', '.join(_KEY_NAMES)}) DO NOTHING RETURNING {', '.join(_KEY_NAMES)}"
            )
            cursor.execute(sql, [v for r in chunk for v in (*_claimed_values(r), now)])
            inserted.update((row[0], row[1]) for row in cursor.fetchall())
        return inserted


class SqlClaimStore:
    """The `ClaimStore` over SQLite or PostgreSQL."""

    def __init__(self, db: Database, stale_after: float = 60.0) -> None:
        self._db = db
        self.stale_after = stale_after
        self._hot: _HotPath = _PostgresHotPath() if db.postgres else _SqliteHotPath()
        # on PostgreSQL the claims run as one autocommitted statement: no BEGIN/COMMIT round trips
        self.writer: Writer[_Write, list[ClaimResult]] = Writer(
            db, self._write, name="store-claims", what="ingest claim", autocommit=db.postgres
        )

    async def claim(self, records: Sequence[IngestRecord]) -> list[ClaimResult]:
        if not records:
            return []
        return await self.writer.submit((_CLAIM, list(records)))

    async def settle(self, keys: Sequence[EventKey]) -> None:
        if keys:
            await self.writer.submit((_SETTLE, list(keys)))

    async def release(self, keys: Sequence[EventKey]) -> None:
        if not keys:
            return

        def run() -> None:
            with self._db.engine.begin() as conn:
                conn.execute(delete(_T).where(and_(_KEY.in_(list(keys)), _C.status == PENDING)))

        await self._db.run(run, "claim release")

    async def record(self, key: EventKey) -> IngestRecord | None:
        def run() -> IngestRecord | None:
            with self._db.engine.connect() as conn:
                row = conn.execute(select(_T).where(_C.source == key[0], _C.event_id == key[1])).first()
            return ingest_record(row._mapping) if row else None

        return await self._db.run(run, "ingest record read")

    async def by_correlation(self, correlation_id: str, limit: int = 100) -> list[IngestRecord]:
        def run() -> list[IngestRecord]:
            with self._db.engine.connect() as conn:
                rows = conn.execute(
                    select(_T)
                    .where(_C.correlation_id == correlation_id)
                    .order_by(_C.received_at)
                    .limit(limit)
                ).all()
            return [ingest_record(r._mapping) for r in rows]

        return await self._db.run(run, "ingest record read")

    async def by_event_id(self, event_id: str, limit: int = 20) -> list[IngestRecord]:
        def run() -> list[IngestRecord]:
            with self._db.engine.connect() as conn:
                rows = conn.execute(
                    select(_T).where(_C.event_id == event_id).order_by(_C.received_at, _C.source).limit(limit)
                ).all()
            return [ingest_record(r._mapping) for r in rows]

        return await self._db.run(run, "ingest record read")

    def close(self) -> None:
        self.writer.close()

    # The writer thread --------------------------------------------------------------------

    def _write(self, writes: list[_Write]) -> list[list[ClaimResult]]:
        """Every queued settle and claim in one round trip; then the keys that already had a
        row are resolved (duplicate, in flight, or a stale claim taken over)."""
        now = time.time()
        settles: list[EventKey] = []
        claims: list[IngestRecord] = []
        for kind, payload in writes:
            (settles if kind is _SETTLE else claims).extend(payload)
        results: list[ClaimResult] = [ClaimResult.IN_FLIGHT] * len(claims)  # a twin in this batch
        first_index: dict[EventKey, int] = {}
        for i, record in enumerate(claims):
            first_index.setdefault(record.key, i)
        with self.writer.connection.cursor() as cursor:
            inserted = self._hot.write(cursor, settles, [claims[i] for i in first_index.values()], now)
        contested: list[EventKey] = []
        for key, i in first_index.items():
            if key in inserted:
                results[i] = ClaimResult.NEW
            else:
                contested.append(key)
        if contested:
            with self._db.engine.begin() as conn:
                for key, result in self._resolve_contested(conn, contested, now).items():
                    results[first_index[key]] = result
        per_write: list[list[ClaimResult]] = []
        start = 0
        for kind, payload in writes:
            if kind is _SETTLE:
                per_write.append([])
            else:
                per_write.append(results[start : start + len(payload)])
                start += len(payload)
        return per_write

    def _resolve_contested(
        self, conn: Connection, keys: list[EventKey], now: float
    ) -> dict[EventKey, ClaimResult]:
        """Keys that already had a row: accepted → duplicate; pending → in flight, or ours if stale."""
        rows = conn.execute(
            select(_C.source, _C.event_id, _C.status, _C.claimed_at).where(_KEY.in_(keys))
        ).all()
        found = {(r.source, r.event_id): r for r in rows}
        outcome: dict[EventKey, ClaimResult] = {}
        for key in keys:
            row = found.get(key)
            if row is None:  # released between our insert and select: the caller retries the claim
                outcome[key] = ClaimResult.IN_FLIGHT
            elif row.status == ACCEPTED:
                outcome[key] = ClaimResult.DUPLICATE
            elif now - row.claimed_at > self.stale_after and self._take_over(conn, key, row.claimed_at, now):
                outcome[key] = ClaimResult.NEW
            else:
                outcome[key] = ClaimResult.IN_FLIGHT
        return outcome

    def _take_over(self, conn: Connection, key: EventKey, seen_claimed_at: float, now: float) -> bool:
        """Compare-and-set on claimed_at, so exactly one replica takes over a stale claim."""
        result = conn.execute(
            update(_T)
            .where(
                _C.source == key[0],
                _C.event_id == key[1],
                _C.status == PENDING,
                _C.claimed_at == seen_claimed_at,
            )
            .values({_C.claimed_at: now})
        )
        return result.rowcount == 1
