"""The in-process broker: the whole Broker contract in memory, for tests (as httpx ships
`MockTransport` beside its real transports). Nothing survives the process.

It keeps the model of the SQLite broker: a message's `available_at` is when it is due, or, while
it is leased, the lease's end; `lease_id` is the current lease's token (settle calls must match
it; None: never handed out, 0: released). Times are read from a `Clock` and waited with
`clock.sleep`, so a test with `ManualClock` drives retry delays, not-before times and lease
expiry with `advance` instead of sleeping.

Several `MemoryBroker`s on one `MemoryServer` behave like processes sharing a RabbitMQ server
(`memory://name` URLs name a shared one); `MemoryServer.down` makes it unreachable.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hookhub.broker.base import (
    Binding,
    Broker,
    BrokerUnavailable,
    Consumer,
    HandlerTasks,
    Lease,
    LeaseHandler,
    PoisonMessage,
    Receipt,
    Topology,
    event_from_message,
    log_orphans,
    message_headers,
)
from hookhub.clock import SYSTEM_CLOCK, Clock
from hookhub.events import Event

log = logging.getLogger(__name__)

ERROR_BACKOFF = 1.0
RENEW_FRACTION = 1 / 3  # renew held leases this often (a fraction of the lease time)


@dataclass(slots=True)
class MemoryMessage:
    seq: int
    routing_key: str
    headers: Any  # the CloudEvents headers; anything at all for an injected message
    body: Any
    available_at: float = 0.0
    attempts: int = 0  # attempts made so far
    lease_id: int | None = None
    dead_reason: str | None = None


_named: weakref.WeakValueDictionary[str, MemoryServer] = weakref.WeakValueDictionary()


class MemoryServer:
    """Queues and bindings shared by the `MemoryBroker`s on it."""

    def __init__(self) -> None:
        self.queues: dict[str, dict[int, MemoryMessage]] = {}
        self.bindings: dict[str, dict[str, tuple[str, ...]]] = {}  # exchange -> queue -> patterns
        self._down = False
        self._seq = itertools.count(1)
        self._tokens = itertools.count(1)
        self._consumers: set[_MemoryConsumer] = set()

    @classmethod
    def named(cls, name: str) -> MemoryServer:
        """The process's server called `name`, alive while some broker uses it."""
        server = _named.get(name)
        if server is None:
            server = _named[name] = cls()
        return server

    @property
    def down(self) -> bool:
        return self._down

    @down.setter
    def down(self, value: bool) -> None:
        self._down = value
        for consumer in self._consumers:
            consumer.wake()

    def check(self) -> None:
        if self._down:
            raise BrokerUnavailable("the in-memory broker server is down")

    def enqueue(
        self,
        queue: str,
        routing_key: str,
        headers: Any,
        body: Any,
        available_at: float = 0.0,
        attempts: int = 0,
    ) -> None:
        seq = next(self._seq)
        self.queues.setdefault(queue, {})[seq] = MemoryMessage(
            seq, routing_key, headers, body, available_at, attempts
        )
        self.touch(queue)

    def inject(self, queue: str, headers: Any, body: Any, routing_key: str = "") -> None:
        """Put a raw message, valid or not, into `queue` (due at once), as a foreign publisher could."""
        self.enqueue(queue, routing_key, headers, body)

    def drain(self, queue: str) -> list[MemoryMessage]:
        """Remove and return every message of `queue`, in order."""
        return list(self.queues.pop(queue, {}).values())

    def touch(self, queue: str) -> None:
        for consumer in self._consumers:
            if consumer.queue == queue:
                consumer.wake()

    def token(self) -> int:
        return next(self._tokens)

    def watch(self, consumer: _MemoryConsumer) -> None:
        self._consumers.add(consumer)

    def forget(self, consumer: _MemoryConsumer) -> None:
        self._consumers.discard(consumer)


class MemoryBroker(Broker):
    """The Broker contract in-process; `server` is shared with other brokers (a fresh one if None)."""

    def __init__(
        self, topology: Topology, clock: Clock = SYSTEM_CLOCK, *, server: MemoryServer | None = None
    ) -> None:
        self.topology = topology
        self.clock = clock
        self.server = server if server is not None else MemoryServer()
        self._bindings: tuple[Binding, ...] = ()
        self._declared = False
        self._started = False
        self._closed = False
        self._consumers: set[_MemoryConsumer] = set()

    async def start(self, bindings: Sequence[Binding] = ()) -> None:
        self._bindings = tuple(bindings)
        self._started, self._closed, self._declared = True, False, False
        try:
            self._open()
        except BrokerUnavailable as exc:
            log.warning("in-memory broker not available yet: %s", exc)

    def _open(self) -> None:
        """Check the server is up and the bindings declared (once it is back, if it was down)."""
        if not self._started or self._closed:
            raise BrokerUnavailable("the in-memory broker is not started or closed")
        self.server.check()
        if not self._declared:
            self._declared = True
            exchange = self.topology.exchange
            self.server.bindings[exchange] = {
                b.queue: tuple(dict.fromkeys(b.patterns)) for b in self._bindings
            }
            prefix = self.topology.subscription_queue("")
            log_orphans(
                {
                    queue: len(messages)
                    for queue, messages in self.server.queues.items()
                    if queue.startswith(prefix) and queue not in self.server.bindings[exchange]
                }
            )

    async def publish(self, events: Sequence[Event], timeout: float = 5.0) -> None:
        if not events:
            return
        self._open()
        now = self.clock.now()
        routes = self.server.bindings.get(self.topology.exchange, {})
        for event in events:
            headers = message_headers(event)
            queues = [q for q, patterns in routes.items() if Binding(q, patterns).matches(event.type)]
            for queue in queues or [self.topology.unrouted_queue]:
                self.server.enqueue(queue, event.type, dict(headers), event.data, now)

    async def ready(self) -> bool:
        try:
            self._open()
        except BrokerUnavailable:
            return False
        return True

    async def close(self) -> None:
        for consumer in list(self._consumers):  # their unsettled leases go back first
            await consumer.cancel()
        self._closed = True

    async def queue_depths(self) -> dict[str, int]:
        self._open()
        topology = self.topology
        bound = self.server.bindings.get(topology.exchange, {})
        depths = dict.fromkeys([topology.unrouted_queue, topology.dead_queue, *bound], 0)
        for queue, messages in self.server.queues.items():
            if queue.startswith(topology.namespace + ".") and (messages or queue in depths):
                depths[queue] = len(messages)
        return depths

    # -- consume side ------------------------------------------------------------------------

    async def consume(self, queue: str, handler: LeaseHandler, *, prefetch: int, lease: float) -> Consumer:
        if prefetch < 1 or lease <= 0:
            raise ValueError("prefetch must be at least 1 and lease positive")
        self._open()
        consumer = _MemoryConsumer(self, queue, handler, prefetch, lease)
        self._consumers.add(consumer)
        self.server.watch(consumer)
        consumer.start()
        return consumer

    async def ack(self, lease: Lease) -> None:
        """Remove the message (even if its lease was lost meanwhile: the outcome is stored)."""
        receipt = self._claim(lease)
        if receipt is not None:
            self.server.queues.get(lease.queue, {}).pop(receipt.seq, None)

    async def retry(self, lease: Lease, delay: float) -> None:
        receipt = self._claim(lease)
        message = receipt.message() if receipt is not None else None
        if message is not None:
            message.available_at = self.clock.now() + max(delay, 0.0)
            message.attempts = lease.attempt
            message.lease_id = None
            self.server.touch(lease.queue)

    async def release(self, lease: Lease) -> None:
        receipt = self._claim(lease)
        if receipt is not None:
            self._release([receipt])

    async def schedule(self, queue: str, event: Event, *, attempt: int, delay: float) -> None:
        if attempt < 1:
            raise ValueError("attempt starts at 1")
        self._open()
        due = self.clock.now() + max(delay, 0.0)
        self.server.enqueue(queue, event.type, message_headers(event), event.data, due, attempt - 1)

    def _claim(self, lease: Lease) -> _MemoryReceipt | None:
        """Mark the lease settled (None if it was already); raises if the server is down."""
        receipt = lease.receipt
        if not isinstance(receipt, _MemoryReceipt):
            raise TypeError(f"not a lease of the in-memory broker: {receipt!r}")
        if receipt.settled:
            return None
        self._open()
        receipt.settled = True
        receipt.consumer.settle(receipt)
        return receipt

    def _release(self, receipts: Sequence[_MemoryReceipt]) -> None:
        now = self.clock.now()
        for receipt in receipts:
            message = receipt.message()
            if message is not None:
                message.available_at = now
                message.lease_id = 0
                self.server.touch(receipt.consumer.queue)

    def forget(self, consumer: _MemoryConsumer) -> None:
        self._consumers.discard(consumer)
        self.server.forget(consumer)


class _MemoryReceipt(Receipt):
    __slots__ = ("consumer", "seq", "token")

    def __init__(self, consumer: _MemoryConsumer, seq: int, token: int) -> None:
        super().__init__()
        self.consumer = consumer
        self.seq = seq
        self.token = token

    def message(self) -> MemoryMessage | None:
        """The message, if this lease still holds it."""
        message = self.consumer.server.queues.get(self.consumer.queue, {}).get(self.seq)
        return message if message is not None and message.lease_id == self.token else None


class _MemoryConsumer(Consumer):
    """Leases due messages of one queue into at most `prefetch` concurrent handler tasks, and
    renews the leases it holds until they are settled."""

    def __init__(
        self, broker: MemoryBroker, queue: str, handler: LeaseHandler, prefetch: int, lease: float
    ) -> None:
        self.queue = queue
        self.server = broker.server
        self._broker = broker
        self._clock = broker.clock
        self._prefetch = prefetch
        self._lease = lease
        self._tasks = HandlerTasks(queue, handler, broker.release)
        self._unsettled: set[_MemoryReceipt] = set()
        self._wake = asyncio.Event()  # a write into the queue, a free slot, the server back up
        self._cancelled = False
        self._runners: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._runners = [
            loop.create_task(self._run(), name=f"hookhub-consume-{self.queue}"),
            loop.create_task(self._renew(), name=f"hookhub-renew-{self.queue}"),
        ]

    def wake(self) -> None:
        self._wake.set()

    def settle(self, receipt: _MemoryReceipt) -> None:
        if receipt in self._unsettled:
            self._unsettled.discard(receipt)
            self._wake.set()

    async def _run(self) -> None:
        while not self._cancelled:
            self._wake.clear()
            free = self._prefetch - len(self._unsettled)
            if free <= 0:
                await self._wake.wait()
                continue
            try:
                self.server.check()
            except BrokerUnavailable:
                await _wait(self._wake, self._clock, ERROR_BACKOFF)
                continue
            next_due = self._take(free)
            if next_due is None or next_due > 0:
                await _wait(self._wake, self._clock, next_due)

    def _take(self, limit: int) -> float | None:
        """Lease up to `limit` due messages; 0 if there may be more, else the seconds until the
        next message is due (None: nothing scheduled)."""
        now = self._clock.now()
        messages = self.server.queues.get(self.queue, {})
        due = heapq.nsmallest(
            limit,
            (m for m in messages.values() if m.available_at <= now),
            key=lambda m: (m.available_at, m.seq),
        )
        token = self.server.token()
        for message in due:
            redelivered = message.lease_id is not None
            message.available_at = now + self._lease
            message.lease_id = token
            self._deliver(message, redelivered)
        if len(due) >= limit:
            return 0.0
        later = [m.available_at for m in messages.values() if m.available_at > now]
        return min(later) - now if later else None

    def _deliver(self, message: MemoryMessage, redelivered: bool) -> None:
        try:
            event = event_from_message(message.headers, message.body)
        except PoisonMessage as exc:
            self._to_dead(message, str(exc))
            return
        receipt = _MemoryReceipt(self, message.seq, message.lease_id or 0)
        self._unsettled.add(receipt)
        lease = Lease(event, self.queue, message.attempts + 1, redelivered, receipt)
        self._tasks.spawn(self._tasks.run(lease))

    def _to_dead(self, message: MemoryMessage, reason: str) -> None:
        dead = self._broker.topology.dead_queue
        del self.server.queues[self.queue][message.seq]
        message.available_at, message.lease_id, message.dead_reason = self._clock.now(), None, reason
        self.server.queues.setdefault(dead, {})[message.seq] = message
        log.warning(
            "message %s in %s is not an event (%s): moved to %s", message.seq, self.queue, reason, dead
        )

    async def _renew(self) -> None:
        """Keep the held leases alive until settled: `lease` only bounds how long a message
        stays hidden after its holder is gone."""
        while not self._cancelled:
            await self._clock.sleep(self._lease * RENEW_FRACTION)
            if self.server.down:
                continue
            until = self._clock.now() + self._lease
            for receipt in self._unsettled:
                message = receipt.message()
                if message is not None:
                    message.available_at = until

    async def cancel(self, grace: float = 0.0) -> None:
        if self._cancelled:
            return
        self._cancelled = True
        self._wake.set()
        for runner in self._runners:
            runner.cancel()
        if self._runners:
            await asyncio.wait(self._runners)
        await self._tasks.wait(grace)
        leftovers = [r for r in self._unsettled if not r.settled]
        self._unsettled.clear()
        for receipt in leftovers:
            receipt.settled = True  # a late ack/retry/release of it is now a no-op
        if not self.server.down:  # else they come back after their lease
            self._broker._release(leftovers)
        await self._tasks.stop()
        self._broker.forget(self)

    async def _halt(self) -> None:
        """Stop as a killed process would: no release, no more renewals (tests use this to show
        that the leases come back after `lease`)."""
        self._cancelled = True
        for runner in self._runners:
            runner.cancel()
        if self._runners:
            await asyncio.wait(self._runners)
        await self._tasks.stop()
        self._broker.forget(self)


async def _wait(event: asyncio.Event, clock: Clock, timeout: float | None) -> None:
    """Until `event` is set or `timeout` seconds of `clock` have passed (None: no timeout)."""
    if event.is_set():
        return
    waiter = asyncio.ensure_future(event.wait())
    if timeout is None:
        await waiter
        return
    sleeper = asyncio.ensure_future(clock.sleep(timeout))
    try:
        await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        sleeper.cancel()
