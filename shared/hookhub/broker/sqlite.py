"""The embedded broker: durable queues in one SQLite file, for the local / single-node shape.

It keeps RabbitMQ's topology (see `base`): each event is routed in Python through the bindings
(AMQP topic patterns) and stored once per matching queue, or in the unrouted queue. A publish is
confirmed when its transaction has committed with `synchronous=FULL` in WAL mode, i.e. it is on
disk. Commits go through a `GroupCommitter`, so concurrent requests share one fsync.

Bindings live in a table, like bindings on a RabbitMQ server: a process that publishes routes to
queues another process (the fan-out side) declared.

Consuming: a `_SQLiteConsumer` per `consume` call leases due rows (`available_at <= now`) up to
its free prefetch slots. A lease is a visibility timeout: it moves `available_at` to the lease's
end (so leased rows fall out of the due range of the index, and a crashed consumer's rows come
back by themselves) and stores the same value in `lease_until`, which doubles as the lease token
and as the "handed out before" mark behind `Delivery.redelivered`. The attempt number and the
not-before time are the `attempts` and `available_at` columns, not headers: a retry is then one
atomic UPDATE (never a duplicate, unlike RabbitMQ's publish-then-ack) and the headers column stays
exactly the CloudEvents attributes. Leases and settlements go through the same `GroupCommitter`
as publishes, so under load one transaction carries the acks of many handlers plus the next lease.
A consumer wakes at once when this process writes into its queue, and otherwise polls (50-200 ms)
for other processes' writes, or sleeps until the next scheduled row is due.

Why the stdlib `sqlite3` and not SQLAlchemy here: the writer is one thread with one connection
running one fixed `executemany` per batch; SQLAlchemy would add statement compilation and its
pysqlite transaction workarounds (it needs event hooks to emit `BEGIN IMMEDIATE`) and nothing in
return, since no other database backs this broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from hookhub.batching import CommitterClosed, GroupCommitter
from hookhub.broker.base import (
    Binding,
    Broker,
    BrokerUnavailable,
    Consumer,
    Delivery,
    DeliveryHandler,
    HandlerTasks,
    Receipt,
    Topology,
    event_from_message,
    message_headers,
)
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
_INSERT_SCHEDULED = (
    f"INSERT INTO {MESSAGES_TABLE} "
    "(queue, routing_key, headers, body, enqueued_at, available_at, attempts) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
# ORDER BY available_at, seq follows the (queue, available_at, seq) index: the scan starts at the
# oldest due row and stops after LIMIT rows; leased rows sit beyond `now` and are never scanned.
_SELECT_DUE = (
    f"SELECT seq, headers, body, attempts, lease_until FROM {MESSAGES_TABLE} "
    "WHERE queue = ? AND available_at <= ? ORDER BY available_at, seq LIMIT ?"
)
_NEXT_DUE = f"SELECT MIN(available_at) FROM {MESSAGES_TABLE} WHERE queue = ? AND available_at > ?"
_LEASE = f"UPDATE {MESSAGES_TABLE} SET available_at = ?, lease_until = ? WHERE seq = ?"
_ACK = f"DELETE FROM {MESSAGES_TABLE} WHERE seq = ?"
# retry and release only while the lease is still ours (after it expired, someone else owns it)
_RETRY = (
    f"UPDATE {MESSAGES_TABLE} SET available_at = ?, attempts = ?, lease_until = NULL "
    "WHERE seq = ? AND lease_until = ?"
)
_RELEASE = f"UPDATE {MESSAGES_TABLE} SET available_at = ? WHERE seq = ? AND lease_until = ?"

POLL_MIN = 0.05  # idle polling for other processes' writes backs off from here...
POLL_MAX = 0.2  # ...to here; this process's own writes wake a consumer at once
ERROR_BACKOFF = 1.0
SETTLE_TIMEOUT = 5.0


# -- what the writer thread executes besides publishes (one transaction for a whole batch) ------


@dataclass(slots=True)
class _Lease:
    queue: str
    limit: int
    lease: float


@dataclass(slots=True)
class _Ack:
    seq: int


@dataclass(slots=True)
class _Retry:
    queue: str
    seq: int
    token: float
    attempts: int  # the new value: the attempt just made
    available_at: float


@dataclass(slots=True)
class _Release:
    queue: str
    rows: list[tuple[int, float]]  # (seq, lease token)


@dataclass(slots=True)
class _Schedule:
    queue: str
    event: Event
    attempts: int
    available_at: float


_Op = _Lease | _Ack | _Retry | _Release | _Schedule
_Row = tuple[int, str, bytes, int, float | None]  # seq, headers, body, attempts, lease_until


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
    """Durable queues in a local SQLite file: publish, leased consumption, delayed retries."""

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
        self._committer: GroupCommitter[Event | _Op, Any] | None = None
        self._closed = False
        self._binding_rows: list[tuple[str, str]] = []
        self._routes: dict[str, tuple[str, ...]] = {}  # routing key -> queues, rebuilt when bindings change
        self._synchronous = ""  # the writer connection's current PRAGMA synchronous
        self._consumers: set[_SQLiteConsumer] = set()
        self._watched: frozenset[str] = frozenset()  # queues consumed here (read by the writer thread)
        self._loop: asyncio.AbstractEventLoop | None = None

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
        for consumer in list(self._consumers):  # their unsettled deliveries go back first
            await consumer.cancel()
        self._closed = True
        committer, self._committer = self._committer, None
        if committer is not None:
            await asyncio.to_thread(committer.close)  # commits what is queued first
        with self._open_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
                self._synchronous = ""

    async def queue_depths(self) -> dict[str, int]:
        if self._conn is None or self._closed:
            raise BrokerUnavailable("the SQLite broker is not open")
        try:
            return await asyncio.to_thread(self._count)
        except sqlite3.Error as exc:
            raise BrokerUnavailable(f"SQLite broker read failed: {exc}") from exc

    # -- consume side ------------------------------------------------------------------------

    async def consume(self, queue: str, handler: DeliveryHandler, *, prefetch: int, lease: float) -> Consumer:
        if prefetch < 1 or lease <= 0:
            raise ValueError("prefetch must be at least 1 and lease positive")
        if self._committer is None or self._closed:
            raise BrokerUnavailable("the SQLite broker is not started or closed")
        self._loop = asyncio.get_running_loop()
        consumer = _SQLiteConsumer(self, queue, handler, prefetch, lease)
        self._consumers.add(consumer)
        self._watched = frozenset(c.queue for c in self._consumers)
        consumer.start()
        return consumer

    async def ack(self, delivery: Delivery) -> None:
        """Delete the row (even if the lease expired meanwhile: the outcome is durable)."""
        receipt = _claim(delivery)
        if receipt is None:
            return
        try:
            await self._submit(_Ack(receipt.seq))
        except Exception:
            receipt.unclaim()
            raise

    async def retry(self, delivery: Delivery, delay: float) -> None:
        """One atomic UPDATE: due again at now + delay, attempt + 1, not leased."""
        receipt = _claim(delivery)
        if receipt is None:
            return
        due = time.time() + max(delay, 0.0)
        try:
            kept = await self._submit(
                _Retry(delivery.queue, receipt.seq, receipt.token, delivery.attempt, due)
            )
        except Exception:
            receipt.unclaim()
            raise
        if not kept:
            log.debug("retry of event %s ignored: its lease had expired", delivery.event.id)

    async def release(self, delivery: Delivery) -> None:
        receipt = _claim(delivery)
        if receipt is None:
            return
        try:
            await self._submit(_Release(delivery.queue, [(receipt.seq, receipt.token)]))
        except Exception:
            receipt.unclaim()
            raise

    async def schedule(self, queue: str, event: Event, *, attempt: int, delay: float) -> None:
        if attempt < 1:
            raise ValueError("attempt starts at 1")
        await self._submit(_Schedule(queue, event, attempt - 1, time.time() + max(delay, 0.0)))

    async def _submit(self, op: _Op, timeout: float = SETTLE_TIMEOUT) -> Any:
        committer = self._committer
        if committer is None or self._closed:
            raise BrokerUnavailable("the SQLite broker is not started or closed")
        try:
            future = committer.enqueue((op,))
        except CommitterClosed as exc:
            raise BrokerUnavailable("the SQLite broker is closed") from exc
        handle = asyncio.get_running_loop().call_later(timeout, _expire, future, timeout)
        try:
            results = await future
        except BrokerUnavailable:
            raise
        except (sqlite3.Error, OSError) as exc:
            raise BrokerUnavailable(f"SQLite broker write failed: {exc}") from exc
        finally:
            handle.cancel()
        return results[0]

    def _wake(self, queues: frozenset[str] | set[str]) -> None:
        for consumer in self._consumers:
            if consumer.queue in queues:
                consumer.wake()

    def _forget(self, consumer: _SQLiteConsumer) -> None:
        self._consumers.discard(consumer)
        self._watched = frozenset(c.queue for c in self._consumers)

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
            self._synchronous = "FULL"
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

    def _set_synchronous(self, conn: sqlite3.Connection, mode: str) -> None:
        """FULL (fsync at commit) when a batch stores messages; NORMAL when it only leases or
        settles: in WAL mode that survives a process crash and loses at most the last commits on
        power loss, and a lost lease or ack only means a redelivery (at-least-once holds)."""
        if self._synchronous != mode:
            conn.execute(f"PRAGMA synchronous = {mode}")
            self._synchronous = mode

    def _write_batch(self, items: list[Event | _Op]) -> list[Any]:
        conn = self._ensure_open()
        now = time.time()
        dumps = json.dumps
        events: list[Event] = []
        ops: list[tuple[int, _Op]] = []
        for i, item in enumerate(items):
            if type(item) is Event:
                events.append(item)
            else:
                ops.append((i, item))  # type: ignore[arg-type]
        results: list[Any] = [None] * len(items)
        touched: set[str] = set()
        durable = bool(events) or any(type(op) is _Schedule for _, op in ops)
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
                if self._watched:
                    for rkey in {e.type for e in events}:
                        touched.update(routes[rkey])
            if ops:
                self._apply(conn, ops, now, results, touched)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise
        woken = touched & self._watched
        loop = self._loop
        if woken and loop is not None:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody consumes any more
                loop.call_soon_threadsafe(self._wake, woken)
        return results

    def _apply(
        self,
        conn: sqlite3.Connection,
        ops: list[tuple[int, _Op]],
        now: float,
        results: list[Any],
        touched: set[str],
    ) -> None:
        """Run the consume-side operations of a batch; leases last, so that they see the rows
        this very batch released or scheduled."""
        acks: list[tuple[int]] = []
        leases: list[tuple[int, _Lease]] = []
        for i, op in ops:
            if type(op) is _Ack:
                acks.append((op.seq,))
            elif type(op) is _Lease:
                leases.append((i, op))
            elif type(op) is _Retry:
                cursor = conn.execute(_RETRY, (op.available_at, op.attempts, op.seq, op.token))
                results[i] = cursor.rowcount == 1
                touched.add(op.queue)
            elif type(op) is _Release:
                conn.executemany(_RELEASE, [(now, seq, token) for seq, token in op.rows])
                touched.add(op.queue)
            elif type(op) is _Schedule:
                event = op.event
                headers = json.dumps(message_headers(event), separators=(",", ":"))
                conn.execute(
                    _INSERT_SCHEDULED,
                    (op.queue, event.type, headers, event.data, now, op.available_at, op.attempts),
                )
                touched.add(op.queue)
        if acks:
            conn.executemany(_ACK, acks)
        for i, lease in leases:
            rows: list[_Row] = conn.execute(_SELECT_DUE, (lease.queue, now, lease.limit)).fetchall()
            until = now + lease.lease
            if rows:
                conn.executemany(_LEASE, [(until, until, row[0]) for row in rows])
            next_due = None
            if len(rows) < lease.limit:  # drained: tell the consumer when to look again
                next_due = conn.execute(_NEXT_DUE, (lease.queue, now)).fetchone()[0]
            results[i] = (rows, until, next_due)

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


class _SQLiteReceipt(Receipt):
    __slots__ = ("consumer", "seq", "token")

    def __init__(self, consumer: _SQLiteConsumer, seq: int, token: float) -> None:
        super().__init__()
        self.consumer = consumer
        self.seq = seq
        self.token = token  # the lease's end, as stored in lease_until: proves the lease is ours

    def unclaim(self) -> None:
        """The settle write failed: the delivery is still the handler's to settle."""
        self.settled = False
        self.consumer.unsettle(self)


def _claim(delivery: Delivery) -> _SQLiteReceipt | None:
    """Mark the delivery settled and free its prefetch slot at once (the row stays leased until
    the write commits, so no lease can pick it up twice); None if it was settled already."""
    receipt = delivery.receipt
    if not isinstance(receipt, _SQLiteReceipt):
        raise TypeError(f"not a delivery of the SQLite broker: {receipt!r}")
    if receipt.settled:
        log.debug("event %s from %s already settled", delivery.event.id, delivery.queue)
        return None
    receipt.settled = True
    receipt.consumer.settle(receipt)
    return receipt


class _SQLiteConsumer(Consumer):
    """Leases due rows of one queue into at most `prefetch` concurrent handler tasks."""

    def __init__(
        self, broker: SQLiteBroker, queue: str, handler: DeliveryHandler, prefetch: int, lease: float
    ) -> None:
        self.queue = queue
        self._broker = broker
        self._prefetch = prefetch
        self._lease = lease
        self._tasks = HandlerTasks(queue, handler, broker.release)
        self._unsettled: set[_SQLiteReceipt] = set()
        self._wake = asyncio.Event()  # this process wrote into the queue
        self._slot = asyncio.Event()  # a prefetch slot came free
        self._cancelled = False
        self._runner: asyncio.Task[None] | None = None

    @property
    def in_flight(self) -> int:
        """Deliveries handed out and not settled yet."""
        return len(self._unsettled)

    def start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(
            self._run(), name=f"hookhub-consume-{self.queue}"
        )

    def wake(self) -> None:
        self._wake.set()

    def settle(self, receipt: _SQLiteReceipt) -> None:
        if receipt in self._unsettled:
            self._unsettled.discard(receipt)
            self._slot.set()

    def unsettle(self, receipt: _SQLiteReceipt) -> None:
        if not self._cancelled:
            self._unsettled.add(receipt)

    async def _run(self) -> None:
        backoff = POLL_MIN
        queue = self.queue
        while not self._cancelled:
            free = self._prefetch - len(self._unsettled)
            if free <= 0:
                self._slot.clear()
                await self._slot.wait()
                continue
            self._wake.clear()  # before the lease: a write that lands after it wakes us again
            try:
                rows, token, next_due = await self._broker._submit(_Lease(queue, free, self._lease))
            except Exception as exc:  # BrokerUnavailable mostly; never let the loop die silently
                log.warning("cannot lease from %s (retrying in %.0fs): %r", queue, ERROR_BACKOFF, exc)
                await _wait(self._wake, ERROR_BACKOFF)
                continue
            if self._cancelled:  # leased after cancel: give them straight back
                if rows:
                    with contextlib.suppress(BrokerUnavailable):
                        await self._broker._submit(_Release(queue, [(row[0], token) for row in rows]))
                return
            for row in rows:
                self._deliver(row, token)
            if len(rows) >= free:  # probably more due: lease again as soon as slots allow
                backoff = POLL_MIN
                continue
            timeout = backoff
            if next_due is not None:
                timeout = min(timeout, max(next_due - time.time(), 0.001))
            woken = await _wait(self._wake, timeout)
            backoff = POLL_MIN if woken or rows else min(backoff * 2, POLL_MAX)

    def _deliver(self, row: _Row, token: float) -> None:
        seq, headers, body, attempts, lease_until = row
        try:
            event = event_from_message(json.loads(headers), body)
        except Exception:  # a row no hookhub wrote: keep it (it comes back after the lease) and say so
            log.exception("cannot decode message %s in %s; leaving it leased", seq, self.queue)
            return
        receipt = _SQLiteReceipt(self, seq, token)
        self._unsettled.add(receipt)
        delivery = Delivery(event, self.queue, attempts + 1, lease_until is not None, receipt)
        self._tasks.spawn(self._tasks.run(delivery))

    async def cancel(self, grace: float = 0.0) -> None:
        if self._cancelled:
            return
        self._cancelled = True
        self._wake.set()
        self._slot.set()
        if self._runner is not None:
            await self._runner
        await self._tasks.wait(grace)
        leftovers = [r for r in self._unsettled if not r.settled]
        self._unsettled.clear()
        for receipt in leftovers:
            receipt.settled = True  # a late ack/retry/release of it is now a no-op
        if leftovers:
            try:
                await self._broker._submit(_Release(self.queue, [(r.seq, r.token) for r in leftovers]))
            except BrokerUnavailable as exc:
                log.warning(
                    "could not release %d deliveries of %s (back after their lease): %s",
                    len(leftovers),
                    self.queue,
                    exc,
                )
        await self._tasks.stop()
        self._broker._forget(self)


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    """Wait for `event` up to `timeout` seconds; True if it was set."""
    if event.is_set():
        return True
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True
