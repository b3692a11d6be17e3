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
    Lease,
    LeaseHandler,
    PoisonMessage,
    QueueInfo,
    Topology,
    event_from_message,
    log_orphans,
    message_headers,
)
from hookhub.broker.leasing import LeasedReceipt, LeasingConsumer, cancel_all, check_consume
from hookhub.clock import SYSTEM_CLOCK, Clock
from hookhub.events import Event

log = logging.getLogger(__name__)


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

    def consumers_of(self, queue: str) -> int:
        return sum(1 for consumer in self._consumers if consumer.queue == queue)

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
        await cancel_all(self._consumers)
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

    async def describe(self, queues: Sequence[str]) -> list[QueueInfo]:
        """Leased (`in_flight`): handed out, lease not over; the rest, scheduled ones too, is `depth`."""
        self._open()
        topology, server = self.topology, self.server
        known = {topology.unrouted_queue, topology.dead_queue, *server.bindings.get(topology.exchange, {})}
        now = self.clock.now()
        infos = []
        for queue in queues:
            messages = server.queues.get(queue)
            if messages is None and queue not in known:
                continue
            leased = sum(1 for m in (messages or {}).values() if m.lease_id and m.available_at > now)
            depth = len(messages or {}) - leased
            infos.append(QueueInfo(queue, depth, server.consumers_of(queue), leased))
        return infos

    async def delete_queue(self, queue: str) -> int:
        """Its messages go, leased ones too (their settle calls become no-ops), and so does its
        binding, on the server and in this broker's set (a later `start` may bind it again)."""
        self._open()
        self._bindings = tuple(b for b in self._bindings if b.queue != queue)
        self.server.bindings.get(self.topology.exchange, {}).pop(queue, None)
        return len(self.server.drain(queue))

    # -- consume side ------------------------------------------------------------------------

    async def consume(self, queue: str, handler: LeaseHandler, *, prefetch: int, lease: float) -> Consumer:
        check_consume(prefetch, lease)
        self._open()
        consumer = _MemoryConsumer(self, queue, handler, prefetch, lease)
        self._consumers.add(consumer)
        self.server.watch(consumer)
        consumer.start()
        return consumer

    async def ack(self, lease: Lease) -> None:
        """Remove the message (even if its lease was lost meanwhile: the outcome is stored)."""
        receipt = _MemoryReceipt.claim(lease, self._open)
        if receipt is not None:
            self.server.queues.get(lease.queue, {}).pop(receipt.seq, None)

    async def retry(self, lease: Lease, delay: float) -> None:
        receipt = _MemoryReceipt.claim(lease, self._open)
        message = self.held(receipt) if receipt is not None else None
        if message is not None:
            message.available_at = self.clock.now() + max(delay, 0.0)
            message.attempts = lease.attempt
            message.lease_id = None
            self.server.touch(lease.queue)

    async def release(self, lease: Lease) -> None:
        receipt = _MemoryReceipt.claim(lease, self._open)
        if receipt is not None:
            self.give_back([receipt])

    async def schedule(self, queue: str, event: Event, *, attempt: int, delay: float) -> None:
        if attempt < 1:
            raise ValueError("attempt starts at 1")
        self._open()
        due = self.clock.now() + max(delay, 0.0)
        self.server.enqueue(queue, event.type, message_headers(event), event.data, due, attempt - 1)

    def held(self, receipt: LeasedReceipt) -> MemoryMessage | None:
        """The message, if `receipt`'s lease still holds it."""
        message = self.server.queues.get(receipt.consumer.queue, {}).get(receipt.seq)
        return message if message is not None and message.lease_id == receipt.token else None

    def give_back(self, receipts: Sequence[LeasedReceipt]) -> None:
        """Make the messages these leases still hold due now (`lease_id` 0: released)."""
        now = self.clock.now()
        for receipt in receipts:
            message = self.held(receipt)
            if message is not None:
                message.available_at = now
                message.lease_id = 0
                self.server.touch(receipt.consumer.queue)

    def forget(self, consumer: _MemoryConsumer) -> None:
        self._consumers.discard(consumer)
        self.server.forget(consumer)


class _MemoryReceipt(LeasedReceipt):
    __slots__ = ()
    broker = "in-memory"


class _MemoryConsumer(LeasingConsumer[_MemoryReceipt]):
    """Leases due messages of one queue. It hears of every write through its server, so it never
    polls: it sleeps until woken or until the next scheduled message is due."""

    def __init__(
        self, broker: MemoryBroker, queue: str, handler: LeaseHandler, prefetch: int, lease: float
    ) -> None:
        super().__init__(
            broker, queue, handler, _MemoryReceipt, prefetch=prefetch, lease=lease, clock=broker.clock
        )
        self.server = broker.server
        self._broker = broker

    async def _lease_due(self, limit: int) -> tuple[int, float | None]:
        self.server.check()
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
            return len(due), None
        later = [m.available_at for m in messages.values() if m.available_at > now]
        return len(due), min(later) if later else None

    def _deliver(self, message: MemoryMessage, redelivered: bool) -> None:
        try:
            event = event_from_message(message.headers, message.body)
        except PoisonMessage as exc:
            self._to_dead(message, str(exc))
            return
        self._hand_out(event, message.seq, message.lease_id or 0, message.attempts, redelivered)

    def _to_dead(self, message: MemoryMessage, reason: str) -> None:
        dead = self._broker.topology.dead_queue
        del self.server.queues[self.queue][message.seq]
        message.available_at, message.lease_id, message.dead_reason = self._clock.now(), None, reason
        self.server.queues.setdefault(dead, {})[message.seq] = message
        log.warning(
            "message %s in %s is not an event (%s): moved to %s", message.seq, self.queue, reason, dead
        )

    async def _renew_held(self, held: Sequence[_MemoryReceipt]) -> int:
        self.server.check()
        until = self._clock.now() + self._lease
        kept = 0
        for receipt in held:
            message = self._broker.held(receipt)
            if message is not None:
                message.available_at = until
                kept += 1
        return kept

    async def _give_back(self, leftovers: Sequence[_MemoryReceipt]) -> None:
        self.server.check()
        self._broker.give_back(leftovers)
