"""`SQLiteBroker`: the Broker interface over a `SQLiteWriter` and a `GroupCommitter`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

from hookhub.batching import CommitterClosed, GroupCommitter
from hookhub.broker.base import (
    Binding,
    Broker,
    BrokerUnavailable,
    Consumer,
    Lease,
    LeaseHandler,
    QueueInfo,
    Topology,
    log_orphans,
)
from hookhub.broker.leasing import cancel_all, check_consume
from hookhub.broker.sqlite import reader
from hookhub.broker.sqlite.consumer import SQLiteConsumer, SQLiteReceipt
from hookhub.broker.sqlite.writer import (
    AckOp,
    DeclareOp,
    DeleteQueueOp,
    Op,
    ReleaseOp,
    RetryOp,
    ScheduleOp,
    SQLiteWriter,
    sqlite_path,
)
from hookhub.events import Event

log = logging.getLogger(__name__)

SETTLE_TIMEOUT = 5.0


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
        self._max_batch = max_batch
        self._writer = SQLiteWriter(self.path, topology, busy_timeout)
        self._writer.notify = self._notify
        self._committer: GroupCommitter[Event | Op, Any] | None = None
        self._closed = False
        self._consumers: set[SQLiteConsumer] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def commits(self) -> int:
        """Transactions committed so far (each one fsync), for tests and metrics."""
        return self._committer.batches if self._committer else 0

    async def start(self, bindings: Sequence[Binding] = ()) -> None:
        self._writer.bindings = tuple(bindings)
        self._closed = False
        if self._committer is None:
            self._committer = GroupCommitter(
                self._writer.write_batch,
                name=f"hookhub-broker-{self.topology.namespace}",
                max_items=self._max_batch,
            )
        try:
            if self._writer.conn is None:
                await asyncio.to_thread(self._writer.ensure_open)  # declares the bindings
            else:  # started before: declare the new set through the writer
                log_orphans(await self.submit(DeclareOp(tuple(bindings))))
        except (sqlite3.Error, OSError, BrokerUnavailable) as exc:
            # like a RabbitMQ that is down: publish raises and ready() is false until it works
            log.warning("SQLite broker %s not available yet: %s", self.path, exc)

    async def publish(self, events: Sequence[Event], timeout: float = 5.0) -> None:
        if events:
            await self._commit(events, timeout)

    async def ready(self) -> bool:
        if self._closed or self._committer is None:
            return False
        if self._writer.conn is not None:
            return True
        try:  # recover once the path becomes writable, as a restarted RabbitMQ would
            await asyncio.to_thread(self._writer.ensure_open)
        except (sqlite3.Error, OSError):
            return False
        return True

    async def close(self) -> None:
        await cancel_all(self._consumers)
        self._closed = True
        committer, self._committer = self._committer, None
        if committer is not None:
            await asyncio.to_thread(committer.close)  # commits what is queued first
        self._writer.close()

    async def queue_depths(self) -> dict[str, int]:
        bound = [b.queue for b in self._writer.bindings]
        return await self._read(lambda conn: reader.count(conn, self.topology, bound))

    async def describe(self, queues: Sequence[str]) -> list[QueueInfo]:
        now = time.time()
        return await self._read(lambda conn: reader.describe(conn, self.topology, queues, now))

    async def delete_queue(self, queue: str) -> int:
        """One transaction drops its rows (leased and scheduled ones too: their settle calls
        then touch nothing) and its bindings, which leave this broker's set as well."""
        dropped: int = await self.submit(DeleteQueueOp(queue))
        self._writer.bindings = tuple(b for b in self._writer.bindings if b.queue != queue)
        return dropped

    async def _read(self, question: Callable[[sqlite3.Connection], Any]) -> Any:
        """Ask `question` on a read connection of its own, in a worker thread."""
        if self._writer.conn is None or self._closed:
            raise BrokerUnavailable("the SQLite broker is not open")

        def ask() -> Any:
            conn = self._writer.connect()
            try:
                return question(conn)
            finally:
                conn.close()

        try:
            return await asyncio.to_thread(ask)
        except sqlite3.Error as exc:
            raise BrokerUnavailable(f"SQLite broker read failed: {exc}") from exc

    # -- consume side ------------------------------------------------------------------------

    async def consume(self, queue: str, handler: LeaseHandler, *, prefetch: int, lease: float) -> Consumer:
        check_consume(prefetch, lease)
        if self._committer is None or self._closed:
            raise BrokerUnavailable("the SQLite broker is not started or closed")
        self._loop = asyncio.get_running_loop()
        consumer = SQLiteConsumer(self, queue, handler, prefetch, lease)
        self._consumers.add(consumer)
        self._writer.watched = frozenset(c.queue for c in self._consumers)
        consumer.start()
        return consumer

    async def ack(self, lease: Lease) -> None:
        """Delete the row (even if the lease expired meanwhile: the outcome is durable)."""
        await self._settle(lease, lambda receipt: AckOp(receipt.seq))

    async def ack_many(self, leases: Sequence[Lease]) -> None:
        """All the DELETEs in one group commit, with one future instead of one per lease."""
        receipts = [r for r in map(SQLiteReceipt.claim, leases) if r is not None]
        if not receipts:
            return
        try:
            await self._commit([AckOp(r.seq) for r in receipts], SETTLE_TIMEOUT)
        except Exception:
            for receipt in receipts:
                receipt.unclaim()
            raise

    async def retry(self, lease: Lease, delay: float) -> None:
        """One atomic UPDATE: due again at now + delay, attempt + 1, not leased."""
        due = time.time() + max(delay, 0.0)
        kept = await self._settle(lease, lambda r: RetryOp(lease.queue, r.seq, r.token, lease.attempt, due))
        if kept is False:
            log.debug("retry of event %s ignored: its lease was lost", lease.event.id)

    async def release(self, lease: Lease) -> None:
        await self._settle(lease, lambda r: ReleaseOp(lease.queue, [(r.seq, r.token)]))

    async def schedule(self, queue: str, event: Event, *, attempt: int, delay: float) -> None:
        if attempt < 1:
            raise ValueError("attempt starts at 1")
        await self.submit(ScheduleOp(queue, event, attempt - 1, time.time() + max(delay, 0.0)))

    async def _settle(self, lease: Lease, op: Callable[[SQLiteReceipt], Op]) -> Any:
        """Store the settle `op` of `lease`; its result (None: settled already, nothing done).
        If it cannot be stored, the lease is unsettled again, for the handler to settle."""
        receipt = SQLiteReceipt.claim(lease)
        if receipt is None:
            return None
        try:
            return await self.submit(op(receipt))
        except Exception:
            receipt.unclaim()
            raise

    async def submit(self, op: Op, timeout: float = SETTLE_TIMEOUT) -> Any:
        """Run one consume-side operation in the next group commit; its result."""
        return (await self._commit((op,), timeout))[0]

    async def _commit(self, items: Sequence[Event | Op], timeout: float) -> list[Any]:
        committer = self._committer
        if committer is None or self._closed:
            raise BrokerUnavailable("the SQLite broker is not started or closed")
        try:
            future = committer.enqueue(items)
        except CommitterClosed as exc:
            raise BrokerUnavailable("the SQLite broker is closed") from exc
        handle = asyncio.get_running_loop().call_later(timeout, _expire, future, timeout)
        try:
            return await future
        except BrokerUnavailable:
            raise
        except (sqlite3.Error, OSError) as exc:
            raise BrokerUnavailable(f"SQLite broker write failed: {exc}") from exc
        finally:
            handle.cancel()

    def forget(self, consumer: SQLiteConsumer) -> None:
        self._consumers.discard(consumer)
        self._writer.watched = frozenset(c.queue for c in self._consumers)

    def _notify(self, queues: set[str]) -> None:
        """On the writer thread: wake this process's consumers of `queues`."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody consumes any more
            loop.call_soon_threadsafe(self._wake, queues)

    def _wake(self, queues: set[str]) -> None:
        for consumer in self._consumers:
            if consumer.queue in queues:
                consumer.wake()


def _expire(future: asyncio.Future[Any], timeout: float) -> None:
    if not future.done():
        future.set_exception(BrokerUnavailable(f"no commit within {timeout:g}s"))
