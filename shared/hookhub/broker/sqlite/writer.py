"""The SQLite broker's storage: schema, statements, and the writer that runs one batch per
transaction on the `GroupCommitter` thread.

Rows carry the consume side's state in columns, not headers, so the headers column stays exactly
the CloudEvents attributes:
- `available_at`: when the row is due; while it is leased, the lease's end (so leased rows fall
  out of the due range of the index, and a dead consumer's rows come back by themselves);
- `attempts`: attempts made so far (a retry is one atomic UPDATE, never a duplicate);
- `lease_id`: NULL until the row is first handed out; then the current lease's random token,
  which settle and renew calls must match (renewal moves `available_at`, the token stays); 0 once
  released. Not NULL is also the "handed out before" mark behind `Lease.redelivered`;
- `dead_reason`: why a row in the dead queue is there.
"""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hookhub.broker.base import Binding, Topology, log_orphans, message_headers
from hookhub.events import Event

log = logging.getLogger(__name__)

MESSAGES_TABLE = "hookhub_messages"
BINDINGS_TABLE = "hookhub_bindings"

# AUTOINCREMENT so that a seq (a receipt id) is never reused after a delete. Files written before
# lease_id/dead_reason existed get them added by `_migrate` (their unused lease_until column stays).
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
    lease_id     INTEGER,
    dead_reason  TEXT
);
CREATE INDEX IF NOT EXISTS {MESSAGES_TABLE}_queue ON {MESSAGES_TABLE} (queue, available_at, seq);
CREATE TABLE IF NOT EXISTS {BINDINGS_TABLE} (
    exchange TEXT NOT NULL,
    queue    TEXT NOT NULL,
    pattern  TEXT NOT NULL,
    PRIMARY KEY (exchange, queue, pattern)
);
"""
_ADDED_COLUMNS = {"lease_id": "INTEGER", "dead_reason": "TEXT"}

_INSERT = (
    f"INSERT INTO {MESSAGES_TABLE} (queue, routing_key, headers, body, enqueued_at, available_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_SCHEDULED = (
    f"INSERT INTO {MESSAGES_TABLE} "
    "(queue, routing_key, headers, body, enqueued_at, available_at, attempts) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
# ORDER BY available_at, seq follows the (queue, available_at, seq) index: the scan starts at the
# oldest due row and stops after LIMIT rows; leased rows sit beyond `now` and are never scanned.
# CAST: a row some other writer stored as invalid UTF-8 text must reach the poison check as bytes,
# not fail the whole SELECT (and with it every lease of the queue).
_SELECT_DUE = (
    f"SELECT seq, CAST(headers AS BLOB), CAST(body AS BLOB), attempts, lease_id FROM {MESSAGES_TABLE} "
    "WHERE queue = ? AND available_at <= ? ORDER BY available_at, seq LIMIT ?"
)
_NEXT_DUE = f"SELECT MIN(available_at) FROM {MESSAGES_TABLE} WHERE queue = ? AND available_at > ?"
_LEASE = f"UPDATE {MESSAGES_TABLE} SET available_at = ?, lease_id = ? WHERE seq = ?"
_ACK = f"DELETE FROM {MESSAGES_TABLE} WHERE seq = ?"
# the rest only while the lease is still ours (after it expired, another consumer may hold it)
_RENEW = f"UPDATE {MESSAGES_TABLE} SET available_at = ? WHERE seq = ? AND lease_id = ?"
_RETRY = (
    f"UPDATE {MESSAGES_TABLE} SET available_at = ?, attempts = ?, lease_id = NULL "
    "WHERE seq = ? AND lease_id = ?"
)
_RELEASE = f"UPDATE {MESSAGES_TABLE} SET available_at = ?, lease_id = 0 WHERE seq = ? AND lease_id = ?"
_TO_DEAD = (
    f"UPDATE {MESSAGES_TABLE} SET queue = ?, available_at = ?, lease_id = NULL, dead_reason = ? "
    "WHERE seq = ? AND lease_id = ?"
)
_DROP_QUEUE = f"DELETE FROM {MESSAGES_TABLE} WHERE queue = ?"
_UNBIND_QUEUE = f"DELETE FROM {BINDINGS_TABLE} WHERE exchange = ? AND queue = ?"
COUNT_RANGE = f"SELECT queue, COUNT(*) FROM {MESSAGES_TABLE} WHERE queue >= ? AND queue < ? GROUP BY queue"


# -- what the writer executes besides publishes (one transaction for a whole batch) -------------


@dataclass(slots=True)
class LeaseOp:
    """Lease up to `limit` due rows; result: (rows, token, next due time or None)."""

    queue: str
    limit: int
    lease: float


@dataclass(slots=True)
class RenewOp:
    """Push the leases' end to now + `lease`; result: how many were still ours."""

    queue: str
    rows: list[tuple[int, int]]  # (seq, lease token)
    lease: float


@dataclass(slots=True)
class AckOp:
    seq: int


@dataclass(slots=True)
class RetryOp:
    """Result: whether the lease was still ours."""

    queue: str
    seq: int
    token: int
    attempts: int  # the new value: the attempt just made
    available_at: float


@dataclass(slots=True)
class ReleaseOp:
    queue: str
    rows: list[tuple[int, int]]  # (seq, lease token)


@dataclass(slots=True)
class ScheduleOp:
    queue: str
    event: Event
    attempts: int
    available_at: float


@dataclass(slots=True)
class DeadOp:
    """Move a leased row that is not an event into the dead queue, headers and body untouched."""

    seq: int
    token: int
    dead_queue: str
    reason: str


@dataclass(slots=True)
class DeleteQueueOp:
    """Drop a queue: its rows, leased and scheduled ones too, and its bindings; result: rows dropped."""

    queue: str


@dataclass(slots=True)
class DeclareOp:
    """Make `bindings` the complete set; result: the unbound subscription queues holding messages."""

    bindings: tuple[Binding, ...]


Op = LeaseOp | RenewOp | AckOp | RetryOp | ReleaseOp | ScheduleOp | DeadOp | DeclareOp | DeleteQueueOp
# ops that store or drop messages or bindings: their batch commits with an fsync
_DURABLE_OPS = (ScheduleOp, DeclareOp, DeadOp, DeleteQueueOp)
Row = tuple[int, bytes, bytes, int, int | None]  # seq, headers, body, attempts, lease_id


def sqlite_path(url: str) -> str:
    """The file path of a `sqlite:///relative/path` or `sqlite:////absolute/path` URL
    (SQLAlchemy's convention, so the broker and the store can share one URL)."""
    from urllib.parse import unquote

    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ValueError(f"not a sqlite:/// URL: {url!r}")
    path = unquote(url[len(prefix) :].split("?", 1)[0])
    if not path or path == ":memory:":
        raise ValueError("the SQLite broker needs a file path (an in-memory database is not durable)")
    return path


def prefix_range(prefix: str) -> tuple[str, str]:
    """Bounds selecting every queue name that starts with `prefix` (which ends with a '.')."""
    return prefix, prefix[:-1] + chr(ord(".") + 1)


class SQLiteWriter:
    """The one write connection and what it executes; runs on the committer thread (and on a
    worker thread for the first open)."""

    def __init__(self, path: str, topology: Topology, busy_timeout: float) -> None:
        self.path = path
        self.topology = topology
        self.busy_timeout = busy_timeout
        self.bindings: tuple[Binding, ...] = ()  # declared when the file is first opened
        self.conn: sqlite3.Connection | None = None
        self.closed = False
        self.watched: frozenset[str] = frozenset()  # queues consumed in this process
        self.notify: Callable[[set[str]], None] | None = None  # called with the watched queues written
        self._open_lock = threading.Lock()
        self._binding_rows: list[tuple[str, str]] = []
        self._routes: dict[str, tuple[str, ...]] = {}  # routing key -> queues, rebuilt when bindings change
        self._synchronous = ""  # the connection's current PRAGMA synchronous

    def connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        conn.execute("PRAGMA synchronous = FULL")  # a confirm means the WAL is fsynced
        return conn

    def ensure_open(self) -> sqlite3.Connection:
        """The connection, opened if need be: schema, then `bindings` declared."""
        with self._open_lock:
            if self.conn is not None:
                return self.conn
            if self.closed:
                raise sqlite3.OperationalError("broker closed")
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = self.connect()
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise sqlite3.OperationalError(f"cannot switch {self.path} to WAL (got {mode})")
                conn.executescript(SCHEMA)
                conn.execute("BEGIN IMMEDIATE")
                self._migrate(conn)
                orphans = self._declare(conn, self.bindings)
                conn.execute("COMMIT")
            except BaseException:
                conn.close()
                raise
            self.conn = conn
            self._synchronous = "FULL"
        log_orphans(orphans)
        return conn

    def close(self) -> None:
        with self._open_lock:
            self.closed = True
            if self.conn is not None:
                self.conn.close()
                self.conn = None
                self._synchronous = ""

    def _migrate(self, conn: sqlite3.Connection) -> None:
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({MESSAGES_TABLE})")}
        for column, kind in _ADDED_COLUMNS.items():
            if column not in have:
                conn.execute(f"ALTER TABLE {MESSAGES_TABLE} ADD COLUMN {column} {kind}")

    def _declare(self, conn: sqlite3.Connection, bindings: Sequence[Binding]) -> dict[str, int]:
        exchange = self.topology.exchange
        conn.execute(f"DELETE FROM {BINDINGS_TABLE} WHERE exchange = ?", (exchange,))
        rows = [(exchange, b.queue, p) for b in bindings for p in dict.fromkeys(b.patterns)]
        conn.executemany(f"INSERT OR IGNORE INTO {BINDINGS_TABLE} VALUES (?, ?, ?)", rows)
        bound = {b.queue for b in bindings}
        low, high = prefix_range(self.topology.subscription_queue(""))
        return {
            queue: count
            for queue, count in conn.execute(COUNT_RANGE, (low, high))
            if queue not in bound and count
        }

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

    def _set_synchronous(self, conn: sqlite3.Connection, mode: str) -> None:
        """FULL (fsync at commit) when a batch stores messages; NORMAL when it only leases or
        settles: in WAL mode that survives a process crash and loses at most the last commits on
        power loss, and a lost lease or ack only means a redelivery (at-least-once holds)."""
        if self._synchronous != mode:
            conn.execute(f"PRAGMA synchronous = {mode}")
            self._synchronous = mode

    def write_batch(self, items: list[Event | Op]) -> list[Any]:
        conn = self.ensure_open()
        now = time.time()
        dumps = json.dumps
        events: list[Event] = []
        ops: list[tuple[int, Op]] = []
        for i, item in enumerate(items):
            if type(item) is Event:
                events.append(item)
            else:
                ops.append((i, item))  # type: ignore[arg-type]
        results: list[Any] = [None] * len(items)
        touched: set[str] = set()
        durable = bool(events) or any(type(op) in _DURABLE_OPS for _, op in ops)
        self._set_synchronous(conn, "FULL" if durable else "NORMAL")
        conn.execute("BEGIN IMMEDIATE")  # take the write lock up front: no deadlock on upgrade
        try:
            if events:
                encoded = [(e.type, dumps(message_headers(e), separators=(",", ":")), e.data) for e in events]
                self._load_routes(conn)  # inside the transaction: routes agree with what is committed
                routes = self._routes
                rows = [
                    (queue, rkey, headers, body, now, now)
                    for rkey, headers, body in encoded
                    for queue in (routes.get(rkey) or self._route(rkey))
                ]
                conn.executemany(_INSERT, rows)
                if self.watched:
                    for rkey in {e.type for e in events}:
                        touched.update(routes[rkey])
            if ops:
                self._apply(conn, ops, now, results, touched)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise
        woken = touched & self.watched
        if woken and self.notify is not None:
            self.notify(woken)
        return results

    def _apply(
        self,
        conn: sqlite3.Connection,
        ops: list[tuple[int, Op]],
        now: float,
        results: list[Any],
        touched: set[str],
    ) -> None:
        """Run the consume-side operations of a batch; leases last, so that they see the rows
        this very batch released or scheduled."""
        acks: list[tuple[int]] = []
        leases: list[tuple[int, LeaseOp]] = []
        for i, op in ops:
            if type(op) is AckOp:
                acks.append((op.seq,))
            elif type(op) is LeaseOp:
                leases.append((i, op))
            elif type(op) is RenewOp:
                until = now + op.lease
                cursor = conn.executemany(_RENEW, [(until, seq, token) for seq, token in op.rows])
                results[i] = cursor.rowcount
            elif type(op) is RetryOp:
                cursor = conn.execute(_RETRY, (op.available_at, op.attempts, op.seq, op.token))
                results[i] = cursor.rowcount == 1
                touched.add(op.queue)
            elif type(op) is ReleaseOp:
                conn.executemany(_RELEASE, [(now, seq, token) for seq, token in op.rows])
                touched.add(op.queue)
            elif type(op) is ScheduleOp:
                event = op.event
                headers = json.dumps(message_headers(event), separators=(",", ":"))
                conn.execute(
                    _INSERT_SCHEDULED,
                    (op.queue, event.type, headers, event.data, now, op.available_at, op.attempts),
                )
                touched.add(op.queue)
            elif type(op) is DeadOp:
                cursor = conn.execute(_TO_DEAD, (op.dead_queue, now, op.reason, op.seq, op.token))
                results[i] = cursor.rowcount == 1
            elif type(op) is DeclareOp:
                results[i] = self._declare(conn, op.bindings)
            elif type(op) is DeleteQueueOp:
                results[i] = conn.execute(_DROP_QUEUE, (op.queue,)).rowcount
                conn.execute(_UNBIND_QUEUE, (self.topology.exchange, op.queue))
        if acks:
            conn.executemany(_ACK, acks)
        for i, lease in leases:
            rows: list[Row] = conn.execute(_SELECT_DUE, (lease.queue, now, lease.limit)).fetchall()
            until = now + lease.lease
            token = random.getrandbits(62) + 1  # not 0 (released) and not NULL (never handed out)
            if rows:
                conn.executemany(_LEASE, [(until, token, row[0]) for row in rows])
            next_due = None
            if len(rows) < lease.limit:  # drained: tell the consumer when to look again
                next_due = conn.execute(_NEXT_DUE, (lease.queue, now)).fetchone()[0]
            results[i] = (rows, token, next_due)
