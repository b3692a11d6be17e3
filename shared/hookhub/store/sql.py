"""The store on SQLAlchemy Core: SQLite (the default, a file) and PostgreSQL (production).

Writes go through a group committer: every claim or settle that arrives while a transaction
is running joins the next one, so a thousand concurrent webhooks cost a handful of multi-row
`INSERT ... ON CONFLICT DO NOTHING RETURNING` statements instead of a thousand round trips.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    and_,
    create_engine,
    delete,
    event,
    func,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from hookhub.batching import CommitterClosed, GroupCommitter
from hookhub.store.base import (
    AttemptRecord,
    ClaimResult,
    DeadLetter,
    EventKey,
    IngestRecord,
    Store,
    StoreUnavailable,
    SubscriptionState,
)

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

# The delivery log: every attempt, the dead letters, and the subscriptions' operator state.
delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("delivery_id", String(64), nullable=False),
    Column("subscription", String(255), nullable=False),
    Column("source", String(255), nullable=False),
    Column("event_id", String(255), nullable=False),
    Column("event_type", String(255), nullable=False),
    Column("correlation_id", String(255), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("attempted_at", Float, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("latency_ms", Float, nullable=False),
    Column("error", Text, nullable=True),
    Column("outcome", String(16), nullable=False),
    Index("ix_delivery_attempts_event", "source", "event_id"),
    Index("ix_delivery_attempts_delivery_id", "delivery_id"),
    Index("ix_delivery_attempts_subscription_time", "subscription", "attempted_at"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("delivery_id", String(64), primary_key=True),
    Column("subscription", String(255), nullable=False),
    Column("source", String(255), nullable=False),
    Column("event_id", String(255), nullable=False),
    Column("event_type", String(255), nullable=False),
    Column("correlation_id", String(255), nullable=False),
    Column("attributes", Text, nullable=False),  # JSON object of the CloudEvent's attributes
    Column("data", LargeBinary, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_status", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("dead_at", Float, nullable=False),
    Column("replayed_at", Float, nullable=True),
    Index("ix_dead_letters_subscription", "subscription", "dead_at"),
)

subscription_states = Table(
    "subscription_states",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)

MAX_ERROR_CHARS = 500  # of an attempt's error text: enough to diagnose, bounded per row
_ATTEMPT_COLUMNS = (
    "delivery_id, subscription, source, event_id, event_type, correlation_id,"
    " attempt, attempted_at, status_code, latency_ms, error, outcome"
)
_DEAD_COLUMNS = (
    "delivery_id, subscription, source, event_id, event_type, correlation_id,"
    " attributes, data, attempts, last_status, last_error, dead_at"
)
# A dead letter recorded twice (a redelivery after a crash) overwrites itself; one that dies
# again after a replay (same delivery id) is listed again, with its new last attempt.
_DEAD_UPSERT_SET = (
    " ON CONFLICT (delivery_id) DO UPDATE SET attempts = excluded.attempts,"
    " last_status = excluded.last_status, last_error = excluded.last_error,"
    " dead_at = excluded.dead_at, replayed_at = NULL"
)
_LogWrite = tuple[AttemptRecord, DeadLetter | None]

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
        # The delivery log has its own committer and, unlike the claims, commits durably (see
        # `record_attempt`). Kept off the claims' thread so no claim ever waits for its fsync,
        # and its batches (many deliveries finishing together) stay one transaction each.
        self._postgres = postgres
        self._log_engine = self.engine if postgres else _durable_sqlite_engine(self.engine)
        self._log: _LogPath = _PostgresLogPath() if postgres else _SqliteLogPath()
        self._log_writes: GroupCommitter[_LogWrite, None] = GroupCommitter(
            self._log_batch, name="store-delivery-log"
        )
        self._db_errors: tuple[type[BaseException], ...] = (
            SQLAlchemyError,
            self.engine.dialect.loaded_dbapi.Error,  # raw-cursor errors on the hot paths
        )
        self._log_write_errors = (*self._db_errors, CommitterClosed)

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
        except self._log_write_errors as exc:
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
        except self._log_write_errors as exc:
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
        await asyncio.to_thread(self._log_writes.close)
        if self._log_engine is not self.engine:
            self._log_engine.dispose()
        self.engine.dispose()

    # Delivery log -------------------------------------------------------------------------

    async def record_attempt(self, attempt: AttemptRecord, dead_letter: DeadLetter | None = None) -> None:
        try:
            await self._log_writes.submit([(attempt, dead_letter)])
        except self._log_write_errors as exc:
            raise StoreUnavailable(f"delivery log write failed: {type(exc).__name__}") from exc

    def _log_batch(self, writes: list[_LogWrite]) -> list[None]:
        """Runs on the delivery-log thread: every queued attempt (and dead letter) in one
        transaction, driver-level SQL (the ingest hot path's reasons apply here too).

        Only a batch that carries a dead letter waits for its commit to reach the disk: once
        its broker message is acked, the dead letter is the event's only copy. A delivered or
        retried attempt is a log line (the subscriber, or the broker's rescheduled copy, holds
        the event), so it commits like the ingest claims: safe from a crash of this process,
        not from a crash of the database server itself. Measured, an fsync per batch cut
        fan-out to a fifth.
        """
        attempts = [attempt for attempt, _ in writes]
        dead = [letter for _, letter in writes if letter is not None]
        with self._log_engine.begin() as conn:
            cursor = conn.connection.cursor()
            try:
                self._log.write(cursor, attempts, dead, durable=bool(dead))
            finally:
                cursor.close()
        return [None] * len(writes)

    @contextmanager
    def _durable(self) -> Iterator[Connection]:
        """A transaction that commits synchronously (operator actions: rare, must not be lost)."""
        with self._log_engine.begin() as conn:
            if self._postgres:
                conn.exec_driver_sql("SET LOCAL synchronous_commit = on")
            yield conn

    async def attempts_for_event(self, source: str, event_id: str) -> list[AttemptRecord]:
        def run() -> list[AttemptRecord]:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(delivery_attempts)
                    .where(delivery_attempts.c.source == source, delivery_attempts.c.event_id == event_id)
                    .order_by(delivery_attempts.c.attempted_at, delivery_attempts.c.id)
                ).all()
            return [_attempt(r._mapping) for r in rows]

        return await self._read_log(run)

    async def attempt_count(self, delivery_id: str) -> int:
        def run() -> int:
            with self.engine.connect() as conn:
                count = conn.execute(
                    select(func.count())
                    .select_from(delivery_attempts)
                    .where(delivery_attempts.c.delivery_id == delivery_id)
                ).scalar_one()
            return int(count)

        return await self._read_log(run)

    async def dead_letters(self, subscription: str | None = None, limit: int = 100) -> list[DeadLetter]:
        def run() -> list[DeadLetter]:
            stmt = select(dead_letters).where(dead_letters.c.replayed_at.is_(None))
            if subscription is not None:
                stmt = stmt.where(dead_letters.c.subscription == subscription)
            stmt = stmt.order_by(dead_letters.c.dead_at, dead_letters.c.delivery_id).limit(limit)
            with self.engine.connect() as conn:
                rows = conn.execute(stmt).all()
            return [_dead_letter(r._mapping) for r in rows]

        return await self._read_log(run)

    async def mark_replayed(self, delivery_ids: Sequence[str]) -> int:
        ids = list(dict.fromkeys(delivery_ids))

        def run() -> int:
            now = time.time()
            marked = 0
            with self._durable() as conn:
                for start in range(0, len(ids), MAX_ROWS_PER_STATEMENT):
                    result = conn.execute(
                        update(dead_letters)
                        .where(
                            dead_letters.c.delivery_id.in_(ids[start : start + MAX_ROWS_PER_STATEMENT]),
                            dead_letters.c.replayed_at.is_(None),
                        )
                        .values(replayed_at=now)
                    )
                    marked += result.rowcount
            return marked

        return await self._write_log(run)

    async def subscription_states(self) -> dict[str, SubscriptionState]:
        def run() -> dict[str, SubscriptionState]:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(subscription_states.c.name, subscription_states.c.state).where(
                        subscription_states.c.state != SubscriptionState.ACTIVE.value
                    )
                ).all()
            return {row.name: SubscriptionState(row.state) for row in rows}

        return await self._read_log(run)

    async def set_subscription_state(self, name: str, state: SubscriptionState, reason: str = "") -> None:
        def run() -> None:
            values = {"name": name, "state": state.value, "reason": reason, "updated_at": time.time()}
            insert = pg_insert if self._postgres else sqlite_insert
            stmt = insert(subscription_states).values(**values)
            stmt = stmt.on_conflict_do_update(
                index_elements=[subscription_states.c.name],
                set_={
                    "state": stmt.excluded.state,
                    "reason": stmt.excluded.reason,
                    "updated_at": stmt.excluded.updated_at,
                },
            )
            with self._durable() as conn:
                conn.execute(stmt)

        await self._write_log(run)

    async def _read_log(self, fn: Any) -> Any:
        try:
            return await asyncio.to_thread(fn)
        except self._db_errors as exc:
            raise StoreUnavailable(f"delivery log read failed: {type(exc).__name__}") from exc

    async def _write_log(self, fn: Any) -> Any:
        try:
            return await asyncio.to_thread(fn)
        except self._db_errors as exc:
            raise StoreUnavailable(f"delivery log write failed: {type(exc).__name__}") from exc


R = TypeVar("R")


def _from_row(cls: type[R], row: Any, **converted: Any) -> R:
    """A record dataclass from a result row: every field by its column name, except those
    the caller passes already converted (JSON text, bytes)."""
    values = {f.name: row[f.name] for f in dataclasses.fields(cls) if f.name not in converted}  # type: ignore[arg-type]
    return cls(**values, **converted)


def _record(row: Any) -> IngestRecord:
    return _from_row(IngestRecord, row)


def _attempt(row: Any) -> AttemptRecord:
    return _from_row(AttemptRecord, row)


def _dead_letter(row: Any) -> DeadLetter:
    return _from_row(DeadLetter, row, attributes=json.loads(row["attributes"]), data=bytes(row["data"]))


def _short(error: str | None) -> str | None:
    return error[:MAX_ERROR_CHARS] if error is not None and len(error) > MAX_ERROR_CHARS else error


def _dead_row(d: DeadLetter) -> tuple[Any, ...]:
    return (
        d.delivery_id,
        d.subscription,
        d.source,
        d.event_id,
        d.event_type,
        d.correlation_id,
        json.dumps(d.attributes, separators=(",", ":")),
        d.data,
        d.attempts,
        d.last_status,
        _short(d.last_error),
        d.dead_at,
    )


def _durable_sqlite_engine(engine: Engine) -> Engine:
    """A second engine on the same SQLite file whose commits are fsynced (synchronous=FULL), as
    the embedded broker's are: its ack of a dead-lettered message must not outlive the dead letter.
    The ingest engine stays on NORMAL (its durability point is the broker)."""
    if engine.url.database in (None, "", ":memory:"):
        return engine  # one private database: a second engine would see another one
    durable = create_engine(engine.url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(durable, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return durable


class _LogPath:
    """The delivery log's batch write, in the database's own SQL."""

    def write(
        self, cursor: Any, attempts: list[AttemptRecord], dead: list[DeadLetter], *, durable: bool
    ) -> None:
        """Insert the rows; with `durable`, the commit returns only once it is on disk."""
        raise NotImplementedError


def _attempt_row(a: AttemptRecord) -> tuple[Any, ...]:
    return (
        a.delivery_id,
        a.subscription,
        a.source,
        a.event_id,
        a.event_type,
        a.correlation_id,
        a.attempt,
        a.attempted_at,
        a.status_code,
        a.latency_ms,
        _short(a.error),
        a.outcome,
    )


class _SqliteLogPath(_LogPath):
    """executemany of constant statements: sqlite3 prepares each once and caches it."""

    INSERT = f"INSERT INTO delivery_attempts ({_ATTEMPT_COLUMNS}) VALUES ({','.join('?' * 12)})"
    DEAD = f"INSERT INTO dead_letters ({_DEAD_COLUMNS}) VALUES ({','.join('?' * 12)}){_DEAD_UPSERT_SET}"

    def write(
        self, cursor: Any, attempts: list[AttemptRecord], dead: list[DeadLetter], *, durable: bool
    ) -> None:
        # per connection, outside a transaction (sqlite3 opens one only at the first INSERT)
        cursor.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=NORMAL")
        cursor.executemany(self.INSERT, [_attempt_row(a) for a in attempts])
        if dead:
            cursor.executemany(self.DEAD, [_dead_row(d) for d in dead])


class _PostgresLogPath(_LogPath):
    """Attempts travel as one JSON parameter, as the ingest claims do: once the fsync is gone
    from plain attempts, psycopg's per-row work in executemany was the cost. Dead letters (rare,
    with binary data) keep executemany. A batch carrying one commits synchronously although the
    connection's default is off."""

    _VALUES = ", ".join(["%s"] * 12)
    INSERT = (
        f"INSERT INTO delivery_attempts ({_ATTEMPT_COLUMNS})"
        f" SELECT {_ATTEMPT_COLUMNS} FROM json_to_recordset(%s::json) AS r("
        "delivery_id text, subscription text, source text, event_id text, event_type text,"
        " correlation_id text, attempt int, attempted_at float8, status_code int, latency_ms float8,"
        " error text, outcome text)"
    )
    DEAD = f"INSERT INTO dead_letters ({_DEAD_COLUMNS}) VALUES ({_VALUES}){_DEAD_UPSERT_SET}"
    _KEYS = [c.strip() for c in _ATTEMPT_COLUMNS.split(",")]

    def write(
        self, cursor: Any, attempts: list[AttemptRecord], dead: list[DeadLetter], *, durable: bool
    ) -> None:
        if durable:
            cursor.execute("SET LOCAL synchronous_commit = on")
        rows = [dict(zip(self._KEYS, _attempt_row(a), strict=True)) for a in attempts]
        cursor.execute(self.INSERT, (json.dumps(rows),))
        if dead:
            cursor.executemany(self.DEAD, [_dead_row(d) for d in dead])


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
