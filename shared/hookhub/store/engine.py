"""The database under the store: engines, dialect quirks, error meaning, the writer threads.

A dead database must not starve the process: connections time out (`CONNECT_TIMEOUT`), a pool
checkout does too (`POOL_TIMEOUT`), and readiness probes share one bounded check (`ping`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy import Table, create_engine, event
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError, StatementError

from hookhub.batching import CommitterClosed, GroupCommitter
from hookhub.store.base import StoreRejected, StoreUnavailable
from hookhub.store.schema import metadata, upgrade

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5  # seconds for a new PostgreSQL connection (a host that accepts but never answers)
POOL_TIMEOUT = 5.0  # seconds to wait for a pooled connection while all are busy
PING_TIMEOUT = 2.0  # seconds a readiness probe waits for the shared check
SQLITE_BUSY_MS = 30_000  # how long a SQLite writer waits for the file lock

T = TypeVar("T")
R = TypeVar("R")


def engine_url(url: str) -> str:
    """SQLAlchemy URL for a store URL: PostgreSQL always through psycopg 3."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _sqlite_engine(sa_url: Any, synchronous: str) -> Engine:
    engine = create_engine(
        sa_url, connect_args={"timeout": SQLITE_BUSY_MS / 1000, "check_same_thread": False}
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
        cursor.close()

    return engine


def _postgres_engine(sa_url: str) -> Engine:
    # synchronous_commit=off: a commit returns before its WAL is flushed. The ingest record is
    # not what makes an event durable (the broker's confirm is), so a PostgreSQL crash can at
    # worst forget the last few claims and let a retried event be published twice: at-least-once
    # across a crash, as the SPEC allows. Writes that must reach the disk turn it on per
    # transaction (`Database.durable`, the attempt log's dead letters).
    return create_engine(
        sa_url,
        pool_size=4,
        max_overflow=4,
        pool_timeout=POOL_TIMEOUT,
        connect_args={
            "options": "-c synchronous_commit=off",
            "connect_timeout": CONNECT_TIMEOUT,
            # a server that vanishes mid-query (no RST) is noticed instead of waited on forever
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        },
    )


class Database:
    """One store URL's engines, and what its errors mean to the caller."""

    def __init__(self, url: str, *, ping_timeout: float = PING_TIMEOUT) -> None:
        self.url = url
        sa_url = engine_url(url)
        self.postgres = sa_url.startswith("postgresql")
        if self.postgres:
            self.engine = _postgres_engine(sa_url)
            self.log_engine = self.engine
        else:
            path = sa_url.split("///", 1)[-1]
            private = path in ("", ":memory:")
            if not private:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            # the broker, not this file, is the durability point of a claim
            self.engine = _sqlite_engine(sa_url, "NORMAL")
            # The attempt log's engine fsyncs each commit, as the embedded broker does: its ack of
            # a dead-lettered message must not outlive the dead letter. An in-memory database has
            # no second connection to give (another engine would see another database).
            self.log_engine = self.engine if private else _sqlite_engine(sa_url, "FULL")
        self._errors: tuple[type[BaseException], ...] = (
            SQLAlchemyError,
            self.engine.dialect.loaded_dbapi.Error,  # raw-cursor errors on the hot paths
            CommitterClosed,
        )
        dbapi = self.engine.dialect.loaded_dbapi
        self._refusals: tuple[type[BaseException], ...] = (ValueError, dbapi.DataError, dbapi.IntegrityError)
        self.ping_timeout = ping_timeout
        # one thread per kind of check (ping, schema): a check is never run twice at once
        self._checks_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="store-check")
        self._checks_lock = threading.Lock()
        self._checks: dict[Callable[[], None], Future[None]] = {}

    def insert(self, table: Table) -> PgInsert | SqliteInsert:
        """The dialect's INSERT, which has ON CONFLICT clauses (both spell them alike)."""
        return pg_insert(table) if self.postgres else sqlite_insert(table)

    # What an error means ------------------------------------------------------------------

    def refused(self, exc: BaseException) -> bool:
        """True when the database refused the values themselves: retrying cannot help."""
        if isinstance(exc, StatementError) and exc.orig is not None:
            exc = exc.orig
        return isinstance(exc, self._refusals)

    def failure(self, exc: BaseException, what: str) -> Exception | None:
        """The store error for a database error (None: not a database error, a bug)."""
        if self.refused(exc):
            cause = exc.orig if isinstance(exc, StatementError) and exc.orig is not None else exc
            first_line = str(cause).splitlines()[0][:200] if str(cause) else ""
            return StoreRejected(f"{what} refused: {type(cause).__name__}: {first_line}")
        if isinstance(exc, self._errors):
            return StoreUnavailable(f"{what} failed: {type(exc).__name__}")
        return None

    async def run(self, fn: Callable[[], R], what: str) -> R:
        """Run a blocking database call on a worker thread, its errors as store errors."""
        try:
            return await asyncio.to_thread(fn)
        except Exception as exc:
            error = self.failure(exc, what)
            if error is None:
                raise
            raise error from exc

    @contextmanager
    def durable(self) -> Iterator[Connection]:
        """A transaction that commits synchronously: rare writes that must not be lost."""
        with self.log_engine.begin() as conn:
            if self.postgres:
                conn.exec_driver_sql("SET LOCAL synchronous_commit = on")
            else:  # the attempt log's writer may have left this pooled connection at NORMAL;
                # sqlite3 opens the transaction only at the first write, so this still applies
                conn.exec_driver_sql("PRAGMA synchronous=FULL")
            yield conn

    # Lifecycle ----------------------------------------------------------------------------

    def _single_flight(self, check: Callable[[], None]) -> asyncio.Future[None]:
        """Join the run of `check` in progress, or start one: readiness probes against a
        database that accepts but never answers cannot pile up threads."""
        with self._checks_lock:
            running = self._checks.get(check)
            if running is None or running.done():
                running = self._checks[check] = self._checks_pool.submit(check)
        return asyncio.shield(asyncio.wrap_future(running))

    async def create_schema(self) -> None:
        """Create (or upgrade) the tables; concurrent callers share one attempt."""
        try:
            await self._single_flight(self._create_schema)
        except Exception as exc:
            error = self.failure(exc, "schema creation")
            if isinstance(error, StoreRejected):  # an unexpected schema: a retry will not fix it either
                error = StoreUnavailable(str(error))
            raise (error or StoreUnavailable(f"schema creation failed: {exc!r}")) from exc

    def _create_schema(self) -> None:
        with self.engine.begin() as conn:
            upgrade(conn)
            metadata.create_all(conn)

    async def ping(self) -> bool:
        """True while the database answers; each caller waits at most `ping_timeout`."""
        try:
            await asyncio.wait_for(self._single_flight(self._select_one), self.ping_timeout)
        except Exception as exc:  # timeout, unreachable, or closed: all mean "not ready"
            log.debug("store ping failed: %r", exc)
            return False
        return True

    def _select_one(self) -> None:
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        self._checks_pool.shutdown(wait=False, cancel_futures=True)
        if self.log_engine is not self.engine:
            self.log_engine.dispose()
        self.engine.dispose()


class HeldConnection:
    """The DBAPI connection one writer thread keeps from batch to batch, with the hot paths' own
    SQL on its cursor: a pool checkout and a SQLAlchemy transaction per batch cost the writer
    about as much Python time as the statement itself. On any error it is closed, never handed
    back to the pool (it may be mid-transaction, or in autocommit), and the next batch opens
    another: what the pool would have done for a broken connection."""

    def __init__(self, engine: Engine, *, autocommit: bool) -> None:
        self._engine = engine
        self._autocommit = autocommit  # one statement per batch needs no BEGIN/COMMIT round trips
        self._conn: Any = None

    @contextmanager
    def cursor(self) -> Iterator[Any]:
        """A cursor whose work is committed when the block exits without an error."""
        conn = self._conn
        if conn is None:
            conn = self._engine.raw_connection()
            if self._autocommit:
                driver = conn.driver_connection
                assert driver is not None  # a connection fresh from the pool has its driver's
                driver.autocommit = True
            self._conn = conn
        try:
            cursor = conn.cursor()
            try:
                yield cursor
            finally:
                cursor.close()
            if not self._autocommit:
                conn.commit()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()


class _Failed:
    """A batch result slot: this caller's write failed on its own (the others' were committed)."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Writer(Generic[T, R]):
    """One writer thread: every caller's write queued meanwhile shares one transaction.

    `write(items) -> results` commits the items in one transaction. If the database refuses the
    batch because of a value (see `Database.refused`), it is retried caller by caller, so only the
    caller whose record is refused gets an error; any other failure fails the whole batch.
    """

    def __init__(
        self,
        db: Database,
        write: Callable[[list[T]], list[R]],
        *,
        name: str,
        what: str,
        engine: Engine | None = None,
        autocommit: bool = False,
    ) -> None:
        self._db = db
        self._write = write
        self._what = what
        # the writer thread's own connection (`write` takes its cursor from here)
        self.connection = HeldConnection(engine or db.engine, autocommit=autocommit)
        self.committer: GroupCommitter[T, R | _Failed] = GroupCommitter(self._batch, name=name)

    async def submit(self, item: T) -> R:
        try:
            (result,) = await self.committer.submit([item])
        except Exception as exc:
            error = self._db.failure(exc, self._what)
            if error is None:
                raise
            raise error from exc
        if isinstance(result, _Failed):
            error = self._db.failure(result.exc, self._what)
            if error is None:
                raise result.exc
            raise error from result.exc
        return result

    def _batch(self, items: list[T]) -> list[R | _Failed]:
        try:
            return list(self._write(items))
        except Exception as exc:
            if len(items) == 1 or not self._db.refused(exc):
                raise
            log.warning("%s: batch of %d refused (%s); retrying one by one", self._what, len(items), exc)
        results: list[R | _Failed] = []
        for item in items:
            try:
                results.extend(self._write([item]))
            except Exception as exc:
                results.append(_Failed(exc))
        return results

    def close(self) -> None:
        """Commit what is queued, then stop the thread (blocking) and close its connection."""
        self.committer.close()
        self.connection.close()
