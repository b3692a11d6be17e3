"""The embedded broker: durable queues in one SQLite file, for the local / single-node shape.

It keeps RabbitMQ's topology (see `base`): each event is routed in Python through the bindings
(AMQP topic patterns) and stored once per matching queue, or in the unrouted queue. A publish is
confirmed when its transaction has committed with `synchronous=FULL` in WAL mode, i.e. it is on
disk. Commits go through a `GroupCommitter`, so concurrent requests share one fsync.

Bindings live in a table, like bindings on a RabbitMQ server: a process that publishes routes to
queues another process (the fan-out side) declared.

Why the stdlib `sqlite3` and not SQLAlchemy here: the writer is one thread with one connection
running one fixed `executemany` per batch; SQLAlchemy would add statement compilation and its
pysqlite transaction workarounds (it needs event hooks to emit `BEGIN IMMEDIATE`) and nothing in
return, since no other database backs this broker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from hookhub.batching import CommitterClosed, GroupCommitter
from hookhub.broker.base import Binding, Broker, BrokerUnavailable, Topology, message_headers
from hookhub.events import Event

log = logging.getLogger(__name__)

MESSAGES_TABLE = "hookhub_messages"
BINDINGS_TABLE = "hookhub_bindings"

# available_at / lease_until / attempts are for the consume side (visibility timeout, retries);
# AUTOINCREMENT so that a seq (used as a receipt id) is never reused after a delete.
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {MESSAGES_TABLE} (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    queue        TEXT    NOT NULL,
    routing_key  TEXT    NOT NULL,
    headers      TEXT    NOT NULL,
    body         BLOB    NOT NULL,
    enqueued_at  REAL    NOT NULL,
    available_at REAL    NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    lease_until  REAL
);
CREATE INDEX IF NOT EXISTS {MESSAGES_TABLE}_queue ON {MESSAGES_TABLE} (queue, available_at, seq);
CREATE TABLE IF NOT EXISTS {BINDINGS_TABLE} (
    exchange TEXT NOT NULL,
    queue    TEXT NOT NULL,
    pattern  TEXT NOT NULL,
    PRIMARY KEY (exchange, queue, pattern)
);
"""

_INSERT = (
    f"INSERT INTO {MESSAGES_TABLE} (queue, routing_key, headers, body, enqueued_at, available_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def sqlite_path(url: str) -> str:
    """The file path of a `sqlite:///relative/path` or `sqlite:////absolute/path` URL
    (SQLAlchemy's convention, so the broker and the store can share one URL)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ValueError(f"not a sqlite:/// URL: {url!r}")
    path = unquote(url[len(prefix) :].split("?", 1)[0])
    if not path or path == ":memory:":
        raise ValueError("the SQLite broker needs a file path (an in-memory database is not durable)")
    return path


class SQLiteBroker(Broker):
    """Durable publish into a local SQLite file; consume arrives with fan-out."""

    def __init__(
        self,
        url: str,
        topology: Topology,
        *,
        busy_timeout: float = 5.0,
        max_batch: int = 5000,
    ) -> None:
        self.path = sqlite_path(url)
        self.topology = topology
        self._busy_timeout = busy_timeout
        self._max_batch = max_batch
        self._bindings: tuple[Binding, ...] = ()
        self._conn: sqlite3.Connection | None = None  # the writer's; used by one thread at a time
        self._open_lock = threading.Lock()
        self._committer: GroupCommitter[Event, None] | None = None
        self._closed = False
        self._binding_rows: list[tuple[str, str]] = []
        self._routes: dict[str, tuple[str, ...]] = {}  # routing key -> queues, rebuilt when bindings change

    @property
    def commits(self) -> int:
        """Transactions committed so far (each one fsync), for tests and metrics."""
        return self._committer.batches if self._committer else 0

    async def start(self, bindings: Sequence[Binding] = ()) -> None:
        self._bindings = tuple(bindings)
        self._closed = False
        if self._committer is None:
            self._committer = GroupCommitter(
                self._write_batch, name=f"hookhub-broker-{self.topology.namespace}", max_items=self._max_batch
            )
        try:
            await asyncio.to_thread(self._ensure_open)
        except (sqlite3.Error, OSError) as exc:
            # like a RabbitMQ that is down: publish raises and ready() is false until it works
            log.warning("SQLite broker %s not available yet: %s", self.path, exc)

    async def publish(self, events: Sequence[Event], timeout: float = 5.0) -> None:
        if not events:
            return
        committer = self._committer
        if committer is None or self._closed:
            raise BrokerUnavailable("the SQLite broker is not started or closed")
        try:
            future = committer.enqueue(events)
        except CommitterClosed as exc:
            raise BrokerUnavailable("the SQLite broker is closed") from exc
        handle = asyncio.get_running_loop().call_later(timeout, _expire, future, timeout)
        try:
            await future
        except BrokerUnavailable:
            raise
        except (sqlite3.Error, OSError) as exc:
            raise BrokerUnavailable(f"SQLite broker write failed: {exc}") from exc
        finally:
            handle.cancel()

    async def ready(self) -> bool:
        if self._closed or self._committer is None:
            return False
        if self._conn is not None:
            return True
        try:  # recover once the path becomes writable, as a restarted RabbitMQ would
            await asyncio.to_thread(self._ensure_open)
        except (sqlite3.Error, OSError):
            return False
        return True

    async def close(self) -> None:
        self._closed = True
        committer, self._committer = self._committer, None
        if committer is not None:
            await asyncio.to_thread(committer.close)  # commits what is queued first
        with self._open_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    async def queue_depths(self) -> dict[str, int]:
        if self._conn is None or self._closed:
            raise BrokerUnavailable("the SQLite broker is not open")
        try:
            return await asyncio.to_thread(self._count)
        except sqlite3.Error as exc:
            raise BrokerUnavailable(f"SQLite broker read failed: {exc}") from exc

    # -- on worker threads -------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves
        conn = sqlite3.connect(
            self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        conn.execute("PRAGMA synchronous = FULL")  # a confirm means the WAL is fsynced
        return conn

    def _ensure_open(self) -> sqlite3.Connection:
        with self._open_lock:
            if self._conn is not None:
                return self._conn
            if self._closed:
                raise sqlite3.OperationalError("broker closed")
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect()
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise sqlite3.OperationalError(f"cannot switch {self.path} to WAL (got {mode})")
                conn.executescript(SCHEMA)
                rows = [
                    (self.topology.exchange, b.queue, p)
                    for b in self._bindings
                    for p in dict.fromkeys(b.patterns)
                ]
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(f"INSERT OR IGNORE INTO {BINDINGS_TABLE} VALUES (?, ?, ?)", rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            return conn

    def _load_routes(self, conn: sqlite3.Connection) -> None:
        rows = conn.execute(
            f"SELECT queue, pattern FROM {BINDINGS_TABLE} WHERE exchange = ? ORDER BY queue, pattern",
            (self.topology.exchange,),
        ).fetchall()
        if rows != self._binding_rows:
            self._binding_rows = rows
            self._routes = {}

    def _route(self, routing_key: str) -> tuple[str, ...]:
        patterns: dict[str, list[str]] = {}
        for queue, pattern in self._binding_rows:
            patterns.setdefault(queue, []).append(pattern)
        queues = tuple(q for q, p in patterns.items() if Binding(q, tuple(p)).matches(routing_key))
        queues = queues or (self.topology.unrouted_queue,)
        if len(self._routes) > 10_000:  # event types are few; bound the cache anyway
            self._routes.clear()
        self._routes[routing_key] = queues
        return queues

    def _write_batch(self, events: list[Event]) -> list[None]:
        conn = self._ensure_open()
        now = time.time()
        dumps = json.dumps
        encoded = [(e.type, dumps(message_headers(e), separators=(",", ":")), e.data) for e in events]
        conn.execute("BEGIN IMMEDIATE")  # take the write lock up front: no deadlock on upgrade
        try:
            self._load_routes(conn)  # inside the transaction: routes agree with what is committed
            routes = self._routes
            rows = [
                (queue, rkey, headers, body, now, now)
                for rkey, headers, body in encoded
                for queue in (routes.get(rkey) or self._route(rkey))
            ]
            conn.executemany(_INSERT, rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise
        return [None] * len(events)

    def _count(self) -> dict[str, int]:
        conn = self._connect()
        try:
            queues = [self.topology.unrouted_queue]
            queues += [b.queue for b in self._bindings]
            queues += [
                row[0]
                for row in conn.execute(
                    f"SELECT DISTINCT queue FROM {BINDINGS_TABLE} WHERE exchange = ?",
                    (self.topology.exchange,),
                )
            ]
            depths = dict.fromkeys(queues, 0)
            marks = ",".join("?" * len(depths))
            sql = f"SELECT queue, COUNT(*) FROM {MESSAGES_TABLE} WHERE queue IN ({marks}) GROUP BY queue"
            for queue, count in conn.execute(sql, list(depths)):
                depths[queue] = count
            return depths
        finally:
            conn.close()


def _expire(future: asyncio.Future[Any], timeout: float) -> None:
    if not future.done():
        future.set_exception(BrokerUnavailable(f"no commit within {timeout:g}s"))
