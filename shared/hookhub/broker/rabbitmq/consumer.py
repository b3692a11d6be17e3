"""Consuming one queue: one channel with its own prefetch, re-subscribed after every reconnect.

One channel per `consume`, each with its own `basic.qos`, so a stalled handler on one queue never
holds up another. Leases of a dead channel cannot be settled any more (their settle calls are
no-ops) and RabbitMQ hands them out again with `redelivered` set.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from typing import TYPE_CHECKING, Any

import pika.exceptions
from pika import spec
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.channel import Channel

from hookhub.broker.base import (
    ATTEMPT_HEADER,
    DEAD_REASON_HEADER,
    NOT_BEFORE_HEADER,
    BrokerUnavailable,
    Consumer,
    HandlerTasks,
    Lease,
    LeaseHandler,
    Receipt,
    event_from_message,
)
from hookhub.broker.rabbitmq.amqp import (
    BACKOFF_MAX,
    BACKOFF_MIN,
    QUORUM,
    Lost,
    close_quietly,
    open_channel,
    rpc,
)
from hookhub.broker.rabbitmq.encoder import UnencodableEvent
from hookhub.broker.rabbitmq.tiers import declare_redeliver, redeliver_exchange

if TYPE_CHECKING:
    from hookhub.broker.rabbitmq.broker import RabbitMQBroker

log = logging.getLogger(__name__)

FROM_QUEUE_HEADER = "hookhub-from-queue"
_REASON_MAX = 1000


class RabbitReceipt(Receipt):
    __slots__ = ("channel", "consumer", "tag")

    def __init__(self, consumer: RabbitConsumer, channel: Channel, tag: int) -> None:
        super().__init__()
        self.consumer = consumer
        self.channel = channel  # delivery tags mean something only on the channel that sent them
        self.tag = tag

    def live(self) -> bool:
        return bool(self.channel.is_open)

    def claim(self) -> bool:
        """Mark it settled; True if an ack/nack can still go out on its channel."""
        if self.settled:
            return False
        self.settled = True
        self.consumer.forget(self)
        return self.live()

    def send(self, *, ack: bool) -> None:
        try:
            if ack:
                self.channel.basic_ack(self.tag)
            else:
                self.channel.basic_nack(self.tag, requeue=True)
        except (pika.exceptions.ChannelWrongStateError, pika.exceptions.ConnectionWrongStateError):
            log.debug("lease %s: channel closed meanwhile; RabbitMQ redelivers it", self.tag)


def receipt_of(lease: Lease) -> RabbitReceipt:
    receipt = lease.receipt
    if not isinstance(receipt, RabbitReceipt):
        raise TypeError(f"not a lease of the RabbitMQ broker: {receipt!r}")
    return receipt


class RabbitConsumer(Consumer):
    """One channel consuming one queue; re-subscribes on every new consumer connection."""

    def __init__(self, broker: RabbitMQBroker, queue: str, handler: LeaseHandler, prefetch: int) -> None:
        self.queue = queue
        self.reparked = 0  # early arrivals sent back to a delay tier (for tests and metrics)
        self.poisoned = 0  # messages moved to the dead queue
        self._broker = broker
        self._prefetch = prefetch
        self._tasks = HandlerTasks(queue, handler, broker.release)
        self._unsettled: set[RabbitReceipt] = set()
        self._channel: Channel | None = None
        self._channel_closed: Lost | None = None
        self._consumer_tag: str | None = None
        self._cancelled = False
        self._runner: asyncio.Task[None] | None = None
        self._attempted = asyncio.Event()  # the first subscription attempt is over
        # The server cancelled the subscription (the queue was deleted, maybe by another process):
        # from then on only a queue that exists again is consumed, never declared anew.
        self._gone = False

    @property
    def attached(self) -> bool:
        """Subscribed on an open channel (the server counts it as a consumer)."""
        channel = self._channel
        return channel is not None and channel.is_open and self._consumer_tag is not None

    @property
    def in_flight(self) -> int:
        """Leases handed out on the current channel and not settled yet."""
        return len(self._unsettled)

    def start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(
            self._run(), name=f"hookhub-consume-{self.queue}"
        )

    async def wait_attached(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._attempted.wait(), timeout)

    def forget(self, receipt: RabbitReceipt) -> None:
        self._unsettled.discard(receipt)

    async def _run(self) -> None:
        delay = BACKOFF_MIN
        while not self._cancelled:
            if self._broker.deleted(self.queue):  # declaring it would bring it back: wait
                self._attempted.set()
                await self._broker.wait_restored(self.queue)
                continue
            connection, lost = await self._broker.consumer_link.wait_up()
            try:
                closed = await self._attach(connection, lost)
            except Exception as exc:  # BrokerUnavailable, or pika's state errors mid-close
                self._attempted.set()
                if self._gone and connection.is_open:  # deleted: look again now and then, quietly
                    log.debug("queue %s is gone; looking for it again in %.0fs", self.queue, BACKOFF_MAX)
                    await asyncio.sleep(BACKOFF_MAX)
                    continue
                log.warning("cannot consume %s (retry in %.1fs): %r", self.queue, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            self._attempted.set()
            delay = BACKOFF_MIN
            await asyncio.wait([closed, lost], return_when=asyncio.FIRST_COMPLETED)
            self._unsettled.clear()  # RabbitMQ has requeued them; their settle calls are no-ops
            self._channel = self._consumer_tag = None
            if not self._cancelled and not self._broker.deleted(self.queue):
                reason = closed.result() if closed.done() else lost.result() if lost.done() else None
                log.warning("consumer channel of %s closed (re-subscribing): %s", self.queue, reason)
                await asyncio.sleep(BACKOFF_MIN)

    async def _attach(self, connection: AsyncioConnection, lost: Lost) -> Lost:
        topology = self._broker.topology
        channel, closed = await open_channel(connection, lost)
        try:
            # Idempotent declarations, so consuming works in any order with `start` and after
            # the server lost its definitions; the queue gets its retries through `<ns>.redeliver`.
            await declare_redeliver(channel, closed, topology)
            if self._gone:  # fails (404) while it does not exist
                await rpc(closed, channel.queue_declare, queue=self.queue, passive=True)
            await rpc(closed, channel.queue_declare, queue=self.queue, durable=True, arguments=QUORUM)
            await rpc(
                closed,
                channel.queue_bind,
                queue=self.queue,
                exchange=redeliver_exchange(topology),
                routing_key=self.queue,
            )
            await rpc(closed, channel.basic_qos, prefetch_count=self._prefetch)
            channel.add_on_cancel_callback(self._on_server_cancel)
            self._channel, self._channel_closed = channel, closed
            frame = await rpc(
                closed, channel.basic_consume, queue=self.queue, on_message_callback=self._on_message
            )
            self._consumer_tag = frame.method.consumer_tag
            self._gone = False
        except BaseException:
            self._channel = None
            close_quietly(channel)
            raise
        return closed

    def _on_server_cancel(self, _frame: Any) -> None:
        """The server dropped the subscription (queue deleted...): start over on a new channel."""
        self._gone = True
        if self._channel is not None:
            close_quietly(self._channel)

    def _on_message(self, channel: Channel, method: Any, props: spec.BasicProperties, body: bytes) -> None:
        tag: int = method.delivery_tag
        if self._cancelled:  # in flight when we cancelled: straight back
            with contextlib.suppress(pika.exceptions.AMQPError):
                channel.basic_nack(tag, requeue=True)
            return
        receipt = RabbitReceipt(self, channel, tag)
        self._unsettled.add(receipt)
        headers = props.headers or {}
        try:
            event = event_from_message(headers, body)
            attempt = int(headers.get(ATTEMPT_HEADER) or 1)
            not_before = headers.get(NOT_BEFORE_HEADER)
            due_ms = int(not_before) if not_before is not None else 0
        except Exception as exc:  # PoisonMessage, or whatever else a foreign message provokes
            self._tasks.spawn(self._bury(receipt, props, body, f"{type(exc).__name__}: {exc}"))
            return
        lease = Lease(event, self.queue, attempt, bool(method.redelivered), receipt)
        if due_ms and due_ms > time.time() * 1000:
            self._tasks.spawn(self._early(lease, due_ms / 1000))
        else:
            self._tasks.spawn(self._tasks.run(lease))

    async def _bury(
        self, receipt: RabbitReceipt, props: spec.BasicProperties, body: bytes, reason: str
    ) -> None:
        """Move a message that is not an event to the dead queue (confirmed), then ack it."""
        dead = self._broker.topology.dead_queue
        reason = reason[:_REASON_MAX]
        marks = {DEAD_REASON_HEADER: reason, FROM_QUEUE_HEADER: self.queue}
        properties = copy.copy(props)
        properties.headers = {**(props.headers or {}), **marks}
        properties.delivery_mode = 2
        publisher = self._broker.publisher
        try:
            try:
                await publisher.publish_raw(dead, properties, body)
            except UnencodableEvent:  # its own properties cannot be re-sent: keep body and marks
                await publisher.publish_raw(dead, spec.BasicProperties(headers=marks, delivery_mode=2), body)
        except BrokerUnavailable as exc:
            log.warning("cannot move a poison message from %s to %s yet: %s", self.queue, dead, exc)
            await asyncio.sleep(BACKOFF_MAX)  # it comes back after the release: no hot loop
            if receipt.claim():
                receipt.send(ack=False)
            return
        self.poisoned += 1
        log.warning("moved a message that is not an event from %s to %s: %s", self.queue, dead, reason)
        if receipt.claim():
            receipt.send(ack=True)

    async def _early(self, lease: Lease, not_before: float) -> None:
        """A message ahead of its time (tier rounding, clock skew): re-park it in a delay tier
        for the remainder, or, under the smallest tier, hold it here until due."""
        broker = self._broker
        remaining = not_before - time.time()
        if broker.tiers.tier_for(remaining) is not None:
            try:
                await broker.publisher.park(self.queue, lease.event, lease.attempt, not_before)
            except (BrokerUnavailable, ValueError) as exc:
                log.warning("cannot re-park event %s for %.1fs: %s", lease.event.id, remaining, exc)
                await asyncio.sleep(min(remaining, BACKOFF_MAX))  # no hot loop while publishing fails
                await broker.release(lease)
                return
            self.reparked += 1
            await broker.ack(lease)
            return
        if remaining > 0:
            await asyncio.sleep(remaining)
        await self._tasks.run(lease)

    async def cancel(self, grace: float = 0.0) -> None:
        if self._cancelled:
            return
        self._cancelled = True
        if self._runner is not None:  # no re-subscribing from here on
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        channel, closed, tag = self._channel, self._channel_closed, self._consumer_tag
        if channel is not None and closed is not None and channel.is_open and tag is not None:
            with contextlib.suppress(BrokerUnavailable):
                await rpc(closed, channel.basic_cancel, consumer_tag=tag)
        await self._tasks.wait(grace)
        for receipt in self._unsettled:
            receipt.settled = True  # closing the channel requeues them; later settles are no-ops
        self._unsettled.clear()
        if channel is not None and closed is not None and channel.is_open:
            channel.close()
            await asyncio.wait([closed], timeout=self._broker.close_timeout)
        self._channel = None
        await self._tasks.stop()
        self._broker.forget(self)
