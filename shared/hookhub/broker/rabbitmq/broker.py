"""`RabbitMQBroker`: the publisher and the consumers on two self-healing connections.

Consuming uses a connection of its own: RabbitMQ blocks a publishing connection under a resource
alarm, and the consumers, whose acks are what frees the memory, must not stall with it.

A queue dropped with `delete_queue` stays "deleted" in this broker until `start` binds it again:
its consumers wait instead of declaring it anew (they declare their queue on every attach), and
its binding leaves the set the publisher applies on every reconnect.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pika

from hookhub.broker.base import (
    Binding,
    Broker,
    BrokerUnavailable,
    Consumer,
    Lease,
    LeaseHandler,
    QueueInfo,
    Topology,
)
from hookhub.broker.rabbitmq.amqp import close_quietly, open_channel, rpc
from hookhub.broker.rabbitmq.consumer import RabbitConsumer, receipt_of
from hookhub.broker.rabbitmq.link import Link
from hookhub.broker.rabbitmq.publisher import Publisher
from hookhub.broker.rabbitmq.tiers import DEFAULT_DELAY_TIERS, DelayTiers
from hookhub.broker.rabbitmq.topology import Probe
from hookhub.events import Event


def _params(url: str, connection_name: str) -> pika.URLParameters:
    params = pika.URLParameters(url)
    params.client_properties = {"connection_name": connection_name, "product": "hookhub"}
    return params


class RabbitMQBroker(Broker):
    """Publishes to `topology.exchange` and consumes subscription queues; delayed retries
    through TTL tiers (`hookhub.broker.rabbitmq.tiers`)."""

    def __init__(
        self,
        url: str,
        topology: Topology,
        *,
        connection_name: str = "hookhub",
        start_timeout: float = 5.0,
        close_timeout: float = 5.0,
        delay_tiers: Sequence[float] = DEFAULT_DELAY_TIERS,
    ) -> None:
        self.topology = topology
        self.tiers = DelayTiers(topology, delay_tiers)
        self.publisher = Publisher(_params(url, connection_name), topology, self.tiers)
        self.consumer_link = Link(_params(url, f"{connection_name}-consume"), "consume")
        self.close_timeout = close_timeout
        self._start_timeout = start_timeout
        self._consumers: set[RabbitConsumer] = set()
        self._started = False
        self._deleted: set[str] = set()  # queues `delete_queue` dropped and no `start` bound since
        self._restored = asyncio.Event()  # set (and replaced) when `start` binds queues again

    @property
    def delay_names(self) -> tuple[str, ...]:
        """The delay tiers' exchange (= queue) names, for operators and test cleanup."""
        return tuple(self.tiers.names)

    async def start(self, bindings: Sequence[Binding] = ()) -> None:
        """Start connecting in the background; wait (up to `start_timeout`) only for the first
        attempt's outcome, so a hub with a reachable broker is ready when `start` returns.
        The bindings are applied on this and every later (re)connect."""
        publisher = self.publisher
        changed = publisher.bindings != tuple(bindings)
        publisher.bindings = tuple(bindings)
        self._started = True
        restored = self._deleted & {b.queue for b in bindings}
        self._deleted -= restored
        if publisher.link.running:
            if changed:
                await publisher.rebind()
        else:
            publisher.start()
            await publisher.link.first_attempt(self._start_timeout)
        if restored:  # declared again by now (if connected): their waiting consumers go ahead
            self._restored.set()
            self._restored = asyncio.Event()

    async def publish(self, events: Sequence[Event], timeout: float = 5.0) -> None:
        if events:
            await self.publisher.publish(events, timeout)

    async def ready(self) -> bool:
        return self.publisher.ready()

    async def close(self) -> None:
        self._started = False
        for consumer in list(self._consumers):  # unsettled leases go back to their queues
            await consumer.cancel()
        await self.consumer_link.close(self.close_timeout)
        await self.publisher.close(self.close_timeout)

    async def queue_depths(self) -> dict[str, int]:
        connection, lost = self.publisher.link.open()
        if not self.publisher.ready():
            raise BrokerUnavailable("not connected to RabbitMQ")
        queues = dict.fromkeys([self.topology.unrouted_queue, *(b.queue for b in self.publisher.bindings)])
        probe = Probe(connection, lost)
        try:
            return {queue: await probe.depth(queue) or 0 for queue in queues}
        finally:
            probe.close()

    async def describe(self, queues: Sequence[str]) -> list[QueueInfo]:
        """Passive declarations: ready messages and consumers as the server counts them. Unacked
        messages it does not tell, so `in_flight` is the leases this process holds, when every
        consumer of the queue is one of this process's (None otherwise)."""
        connection, lost = self.publisher.link.open()
        probe = Probe(connection, lost)
        infos = []
        try:
            for queue in queues:
                counts = await probe.counts(queue)
                if counts is None:
                    continue
                ready, consumers = counts
                ours = [c for c in self._consumers if c.queue == queue and c.attached]
                in_flight = sum(c.in_flight for c in ours) if len(ours) == consumers else None
                infos.append(QueueInfo(queue, ready, consumers, in_flight))
        finally:
            probe.close()
        return infos

    async def delete_queue(self, queue: str) -> int:
        """`queue.delete` on a channel of its own. Counted: its ready messages and the leases this
        process held (other processes' leases go too, uncounted). Retries parked in the shared
        delay tiers cannot be picked out: when due they find no queue and land in the unrouted
        queue. On `BrokerUnavailable` the queue may or may not be gone: call again."""
        connection, lost = self.publisher.link.open()
        self._deleted.add(queue)  # before the delete: our consumers, cancelled by it, must wait
        self.publisher.bindings = tuple(b for b in self.publisher.bindings if b.queue != queue)
        held = sum(c.in_flight for c in self._consumers if c.queue == queue)
        channel, closed = await open_channel(connection, lost)
        try:
            frame = await rpc(closed, channel.queue_delete, queue=queue)
        except BrokerUnavailable:
            if not connection.is_open:
                raise
            return 0  # refused (e.g. 404 on servers that answer so for a missing queue)
        finally:
            close_quietly(channel)
        return int(frame.method.message_count) + held

    def deleted(self, queue: str) -> bool:
        return queue in self._deleted

    async def wait_restored(self, queue: str) -> None:
        """Until `start` binds `queue` again."""
        while queue in self._deleted:
            await self._restored.wait()

    # -- consume side ---------------------------------------------------------------------------

    async def consume(self, queue: str, handler: LeaseHandler, *, prefetch: int, lease: float) -> Consumer:
        """`lease` does not apply here: a lease stays with this consumer until its connection
        goes (RabbitMQ's own `consumer_timeout`, 30 min by default, is the upper bound)."""
        if not 1 <= prefetch <= 65535:
            raise ValueError("prefetch must be between 1 and 65535 (AMQP basic.qos)")
        if not self._started:
            raise BrokerUnavailable("the RabbitMQ broker is not started or closed")
        self.consumer_link.start()
        consumer = RabbitConsumer(self, queue, handler, prefetch)
        self._consumers.add(consumer)
        consumer.start()
        await consumer.wait_attached(self._start_timeout)  # subscribed when we return, if reachable
        return consumer

    def forget(self, consumer: RabbitConsumer) -> None:
        self._consumers.discard(consumer)

    async def ack(self, lease: Lease) -> None:
        receipt = receipt_of(lease)
        if receipt.claim():
            receipt.send(ack=True)

    async def release(self, lease: Lease) -> None:
        receipt = receipt_of(lease)
        if receipt.claim():
            receipt.send(ack=False)

    async def retry(self, lease: Lease, delay: float) -> None:
        """Schedule the copy (confirmed), then ack the original. On a lease whose channel is
        gone this is a no-op: RabbitMQ hands the original out again, and a copy would double it."""
        receipt = receipt_of(lease)
        if receipt.settled or not receipt.live():
            receipt.claim()
            return
        receipt.settled = True  # a concurrent settle of the same lease is now a no-op
        try:
            await self.schedule(lease.queue, lease.event, attempt=lease.attempt + 1, delay=delay)
        except BaseException:
            receipt.settled = False  # still the handler's (or `cancel`'s) to settle
            raise
        receipt.settled = False
        if receipt.claim():
            receipt.send(ack=True)

    async def schedule(self, queue: str, event: Event, *, attempt: int, delay: float) -> None:
        if attempt < 1:
            raise ValueError("attempt starts at 1")
        await self.publisher.park(queue, event, attempt, time.time() + max(delay, 0.0))
