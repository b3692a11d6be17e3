"""The store on SQLAlchemy Core: SQLite (the default, a file) and PostgreSQL (production).

Writes go through a group committer: every claim or settle that arrives while a transaction
is running joins the next one, so a thousand concurrent webhooks cost a handful of multi-row
`INSERT ... ON CONFLICT DO NOTHING RETURNING` statements instead of a thousand round trips.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    Index,
    MetaData,
    String,
    Table,
    and_,
    create_engine,
    delete,
    event,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from hookhub.batching import GroupCommitter
from hookhub.store.base import ClaimResult, EventKey, IngestRecord, Store, StoreUnavailable

metadata = MetaData()

ingest_records = Table(
    "ingest_records",
    metadata,
    Column("source", String(255), primary_key=True),
    Column("event_id", String(255), primary_key=True),
    Column("type", String(255), nullable=False),
    Column("origin", String(255), nullable=False),
    Column("correlation_id", String(255), nullable=False),
    Column("received_at", Float, nullable=False),
    Column("status", String(16), nullable=False),
    Column("claimed_at", Float, nullable=False),
    Index("ix_ingest_records_correlation_id", "correlation_id"),
    Index("ix_ingest_records_received_at", "received_at"),
)

_KEY = tuple_(ingest_records.c.source, ingest_records.c.event_id)
MAX_ROWS_PER_STATEMENT = 500  # well under SQLite's bound-parameter limit at 8 columns a row
_CLAIM, _SETTLE = "claim", "settle"
_Write = tuple[str, Any]  # (_CLAIM, IngestRecord) or (_SETTLE, EventKey)


def engine_url(url: str) -> str:
    """SQLAlchemy URL for a store URL: PostgreSQL always through psycopg 3."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str) -> Engine:
    sa_url = engine_url(url)
    if sa_url.startswith("sqlite"):
        path = sa_url.split("///", 1)[-1]
        if path and path != ":memory:":
            from pathlib import Path

            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(sa_url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")  # the broker, not this table, is the durability point
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    # synchronous_commit=off: a commit returns before its WAL is flushed. The ingest record is
    # not what makes an event durable (the broker's confirm is), so a PostgreSQL crash can at
    # worst forget the last few claims and let a retried event be published twice: at-least-once
    # across a crash, as the SPEC allows. It spares every batch an fsync that competes with the
    # broker's own for the disk.
    return create_engine(
        sa_url,
        pool_size=4,
        max_overflow=4,
        connect_args={"options": "-c synchronous_commit=off"},
    )


class SqlStore(Store):
    """One implementation for both databases; only the upsert dialect differs."""

    def __init__(self, url: str, stale_after: float = 60.0) -> None:
        self.url = url
        self.stale_after = stale_after
        self.engine = make_engine(url)
        postgres = self.engine.dialect.name == "postgresql"
        self._hot: _HotPath = _PostgresHotPath() if postgres else _SqliteHotPath()
        # PostgreSQL runs the hot path as one autocommitted statement: no BEGIN/COMMIT round trips.
        self._hot_engine = (
            self.engine.execution_options(isolation_level="AUTOCOMMIT") if postgres else self.engine
        )
        # One writer thread for claims and settles: on SQLite a second writer would only queue on
        # the file lock; on PostgreSQL (measured) a second or third thread lost more to the GIL
        # than it gained in overlapped round trips, in throughput and in tail latency alike.
        self._writes: GroupCommitter[_Write, ClaimResult | None] = GroupCommitter(
            self._write_batch, name="store-writes"
        )

    # Schema -------------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await asyncio.to_thread(metadata.create_all, self.engine)
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"store unreachable: {type(exc).__name__}") from exc

    # Claims -------------------------------------------------------------------------------

    async def claim(self, records: Sequence[IngestRecord]) -> list[ClaimResult]:
        try:
            results = await self._writes.submit([(_CLAIM, r) for r in records])
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"store write failed: {type(exc).__name__}") from exc
        return [r if r is not None else ClaimResult.IN_FLIGHT for r in results]

    def _write_batch(self, writes: list[_Write]) -> list[ClaimResult | None]:
        """Runs on a committer thread: every queued settle and claim in one round trip.

        Driver-level SQL (see `_HotPath`): this runs for every event, and SQLAlchemy's per-row
        parameter processing cost more than the database's own work.
        """
        now = time.time()
        settles: list[EventKey] = [payload for kind, payload in writes if kind is _SETTLE]
        claims: list[IngestRecord] = [payload for kind, payload in writes if kind is _CLAIM]
        results: list[ClaimResult | None] = [None] * len(claims)
        first_index: dict[EventKey, int] = {}
        for i, record in enumerate(claims):
            if record.key in first_index:
                results[i] = ClaimResult.IN_FLIGHT  # a twin in this same batch goes first
            else:
                first_index[record.key] = i
        with self._hot_engine.begin() as conn:
            cursor = conn.connection.cursor()
            try:
                inserted = self._hot.write(cursor, settles, [claims[i] for i in first_index.values()], now)
            finally:
                cursor.close()
        contested: list[EventKey] = []
        for key, i in first_index.items():
            if key in inserted:
                results[i] = ClaimResult.NEW
            else:
                contested.append(key)
        if contested:
            with self.engine.begin() as conn:
                for key, result in self._resolve_contested(conn, contested, now).items():
                    results[first_index[key]] = result
        claimed = iter(results)
        return [next(claimed) if kind is _CLAIM else None for kind, _ in writes]

    def _resolve_contested(
        self, conn: Connection, keys: list[EventKey], now: float
    ) -> dict[EventKey, ClaimResult]:
        """Keys that already had a row: accepted → duplicate; pending → in flight, or ours if stale."""
        rows = conn.execute(
            select(
                ingest_records.c.source,
                ingest_records.c.event_id,
                ingest_records.c.status,
                ingest_records.c.claimed_at,
            ).where(_KEY.in_(keys))
        ).all()
        found = {(r.source, r.event_id): r for r in rows}
        outcome: dict[EventKey, ClaimResult] = {}
        for key in keys:
            row = found.get(key)
            if row is None:  # released between our insert and select: the caller retries the claim
                outcome[key] = ClaimResult.IN_FLIGHT
            elif row.status == "accepted":
                outcome[key] = ClaimResult.DUPLICATE
            elif now - row.claimed_at > self.stale_after and self._take_over(conn, key, row.claimed_at, now):
                outcome[key] = ClaimResult.NEW
            else:
                outcome[key] = ClaimResult.IN_FLIGHT
        return outcome

    def _take_over(self, conn: Connection, key: EventKey, seen_claimed_at: float, now: float) -> bool:
        """Compare-and-set on claimed_at, so exactly one replica takes over a stale claim."""
        result = conn.execute(
            update(ingest_records)
            .where(
                and_(
                    ingest_records.c.source == key[0],
                    ingest_records.c.event_id == key[1],
                    ingest_records.c.status == "pending",
                    ingest_records.c.claimed_at == seen_claimed_at,
                )
            )
            .values(claimed_at=now)
        )
        return result.rowcount == 1

    # Settle and release -------------------------------------------------------------------

    async def settle(self, keys: Sequence[EventKey]) -> None:
        try:
            await self._writes.submit([(_SETTLE, k) for k in keys])
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"store write failed: {type(exc).__name__}") from exc

    async def release(self, keys: Sequence[EventKey]) -> None:
        def run() -> None:
            with self.engine.begin() as conn:
                conn.execute(
                    delete(ingest_records).where(
                        and_(_KEY.in_(list(keys)), ingest_records.c.status == "pending")
                    )
                )

        try:
            await asyncio.to_thread(run)
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"store write failed: {type(exc).__name__}") from exc

    # Reads --------------------------------------------------------------------------------

    async def ingest_record(self, key: EventKey) -> IngestRecord | None:
        def run() -> IngestRecord | None:
            with self.engine.connect() as conn:
                stmt = select(ingest_records).where(
                    ingest_records.c.source == key[0], ingest_records.c.event_id == key[1]
                )
                row = conn.execute(stmt).first()
            return _record(row._mapping) if row else None

        return await self._read(run)

    async def records_by_correlation(self, correlation_id: str, limit: int = 100) -> list[IngestRecord]:
        def run() -> list[IngestRecord]:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(ingest_records)
                    .where(ingest_records.c.correlation_id == correlation_id)
                    .order_by(ingest_records.c.received_at)
                    .limit(limit)
                ).all()
            return [_record(r._mapping) for r in rows]

        return await self._read(run)

    async def _read(self, fn: Any) -> Any:
        try:
            return await asyncio.to_thread(fn)
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"store read failed: {type(exc).__name__}") from exc

    async def ping(self) -> bool:
        def run() -> None:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))

        try:
            await asyncio.wait_for(asyncio.to_thread(run), timeout=2.0)
            return True
        except (SQLAlchemyError, TimeoutError, OSError):
            return False

    async def close(self) -> None:
        await asyncio.to_thread(self._writes.close)
        self.engine.dispose()


def _record(row: Any) -> IngestRecord:
    return IngestRecord(
        source=row["source"],
        event_id=row["event_id"],
        type=row["type"],
        origin=row["origin"],
        correlation_id=row["correlation_id"],
        received_at=row["received_at"],
        status=row["status"],
    )


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
        "UPDATE ingest_records SET status = 'accepted'"
        " FROM json_to_recordset(%s::json) AS k(s text, e text)"
        " WHERE ingest_records.source = k.s AND ingest_records.event_id = k.e"
    )
    INSERT = (
        "INSERT INTO ingest_records"
        " (source, event_id, type, origin, correlation_id, received_at, status, claimed_at)"
        " SELECT s, e, t, o, c, r, 'pending', %s"
        " FROM json_to_recordset(%s::json) AS u(s text, e text, t text, o text, c text, r float8)"
        " ON CONFLICT (source, event_id) DO NOTHING RETURNING source, event_id"
    )
    BOTH = f"WITH settled AS ({SETTLE} RETURNING 1) {INSERT}"

    def write(
        self, cursor: Any, settles: list[EventKey], claims: list[IngestRecord], now: float
    ) -> set[EventKey]:
        settle_rows = json.dumps([{"s": k[0], "e": k[1]} for k in settles])
        if not claims:
            cursor.execute(self.SETTLE, (settle_rows,))
            return set()
        claim_rows = json.dumps(
            [
                {
                    "s": r.source,
                    "e": r.event_id,
                    "t": r.type,
                    "o": r.origin,
                    "c": r.correlation_id,
                    "r": r.received_at,
                }
                for r in claims
            ]
        )
        if settles:
            cursor.execute(self.BOTH, (settle_rows, now, claim_rows))
        else:
            cursor.execute(self.INSERT, (now, claim_rows))
        return {(row[0], row[1]) for row in cursor.fetchall()}


class _SqliteHotPath(_HotPath):
    """Multi-row VALUES in chunks (SQLite has no arrays; sqlite3 caches each statement text),
    inside the caller's transaction: in-process calls, so several statements cost nothing."""

    def write(
        self, cursor: Any, settles: list[EventKey], claims: list[IngestRecord], now: float
    ) -> set[EventKey]:
        if settles:
            cursor.executemany(
                "UPDATE ingest_records SET status = 'accepted' WHERE source = ? AND event_id = ?", settles
            )
        inserted: set[EventKey] = set()
        for start in range(0, len(claims), MAX_ROWS_PER_STATEMENT):
            chunk = claims[start : start + MAX_ROWS_PER_STATEMENT]
            sql = (
                "INSERT INTO ingest_records"
                " (source, event_id, type, origin, correlation_id, received_at, status, claimed_at) VALUES "
                + ",".join(["(?,?,?,?,?,?,'pending',?)"] * len(chunk))
                + " ON CONFLICT (source, event_id) DO NOTHING RETURNING source, event_id"
            )
            params = [
                v
                for r in chunk
                for v in (r.source, r.event_id, r.type, r.origin, r.correlation_id, r.received_at, now)
            ]
            cursor.execute(sql, params)
            inserted.update((row[0], row[1]) for row in cursor.fetchall())
        return inserted
