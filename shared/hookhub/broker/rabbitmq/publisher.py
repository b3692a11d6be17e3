"""The publishing connection: one confirm-mode channel, the frame encoder and an outbox.

Frames go to an outbox flushed once per event-loop iteration, so the many single-event publishes
of concurrent requests leave in one transport write, not one each. `publish` never waits for a
reconnect: while the link is down it fails fast with `BrokerUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import pika
from pika import spec
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.channel import Channel

from hookhub.broker.base import Binding, BrokerUnavailable, Topology, log_orphans
from hookhub.broker.rabbitmq.amqp import Lost, close_quietly, open_channel, rpc
from hookhub.broker.rabbitmq.confirms import ConfirmTracker
from hookhub.broker.rabbitmq.encoder import PublishEncoder, schedule_headers
from hookhub.broker.rabbitmq.link import Link
from hookhub.broker.rabbitmq.tiers import DelayTiers
from hookhub.broker.rabbitmq.topology import apply_bindings
from hookhub.events import Event

log = logging.getLogger(__name__)

SCHEDULE_TIMEOUT = 5.0  # confirm wait of `park` and `publish_raw` (their callers pass none)


class Publisher:
    """Publishes with pipelined confirms over a self-healing link; (re)applies the topology and
    bindings on every new connection."""

    def __init__(self, params: pika.URLParameters, topology: Topology, tiers: DelayTiers) -> None:
        self.topology = topology
        self.tiers = tiers
        self.bindings: tuple[Binding, ...] = ()
        self.link = Link(params, "publish", self._set_up)
        self._channel: Channel | None = None  # set only while open and in confirm mode
        self._encoder: PublishEncoder | None = None
        self._tracker = ConfirmTracker()
        self._outbox: list[bytes] = []  # frames of this loop iteration's publishes, not yet written
        self._flush_scheduled = False
        self._blocked = False
        self._declared: dict[int | None, asyncio.Task[None]] = {}  # delay tiers, per connection
        self._closing = False

    def ready(self) -> bool:
        connection = self.link.connection
        return (
            self._channel is not None and connection is not None and connection.is_open and not self._blocked
        )

    async def publish(self, events: Sequence[Event], timeout: float) -> None:
        encoder = self._writable()
        outbox = self._outbox
        mark = len(outbox)
        encode = encoder.encode
        try:
            for event in events:
                encode(event, outbox)
        except BaseException:  # an unencodable event: nothing of this batch goes out
            del outbox[mark:]
            raise
        await self._confirm(len(events), timeout)

    async def park(self, queue: str, event: Event, attempt: int, not_before: float) -> None:
        """Publish `event` for `queue`, due at `not_before` (unix seconds), confirmed."""
        tier = self.tiers.tier_for(not_before - time.time())
        await self._ensure_declared(tier)
        encoder = self._writable()
        extra = schedule_headers(attempt, math.ceil(not_before * 1000))
        encoder.encode(
            event, self._outbox, exchange=self.tiers.exchange(tier), routing_key=queue, extra_headers=extra
        )
        await self._confirm(1, SCHEDULE_TIMEOUT)

    async def publish_raw(self, routing_key: str, properties: spec.BasicProperties, body: bytes) -> None:
        """Publish any message to a queue by name (default exchange), confirmed."""
        self._writable().encode_raw("", routing_key, properties, body, self._outbox)
        await self._confirm(1, SCHEDULE_TIMEOUT)

    def _writable(self) -> PublishEncoder:
        connection, encoder = self.link.connection, self._encoder
        if self._channel is None or connection is None or encoder is None or not connection.is_open:
            raise BrokerUnavailable("not connected to RabbitMQ")
        if self._blocked:
            raise BrokerUnavailable("RabbitMQ is blocking publishers (resource alarm)")
        return encoder

    async def _confirm(self, count: int, timeout: float) -> None:
        """Wait for the confirms of the `count` messages just put in the outbox (no await may come
        between encoding them and this call: their delivery tags are assigned here)."""
        batch = self._tracker.track(count)
        loop = asyncio.get_running_loop()
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)  # runs before the timer below can fire
        handle = loop.call_later(timeout, batch.expire, timeout)
        try:
            await batch.waiter
        finally:
            handle.cancel()

    def _flush(self) -> None:
        self._flush_scheduled = False
        outbox, self._outbox = self._outbox, []
        connection = self.link.connection
        if not outbox or connection is None or self._channel is None:
            return  # a lost connection has already failed these batches
        data = b"".join(outbox)
        try:
            connection._adapter_emit_data(data)  # buffered; sent as soon as the socket is writable
        except Exception as exc:  # the transport is gone but pika has not told us yet
            self._fail(BrokerUnavailable(f"RabbitMQ connection broken: {exc!r}"))
            return
        connection.bytes_sent += len(data)

    def _fail(self, error: BrokerUnavailable) -> None:
        self._outbox = []  # their delivery tags belong to a channel that is gone
        self._tracker.fail_all(error)

    async def _ensure_declared(self, tier: int | None) -> None:
        """Declare a tier (with the redeliver exchange) on its first use per connection: an
        ingest-only process never declares any, and a hub only the few its delays need."""
        task = self._declared.get(tier)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            connection, lost = self.link.open()
            task = asyncio.get_running_loop().create_task(self._declare_tier(connection, lost, tier))
            self._declared[tier] = task
        await asyncio.shield(task)

    async def _declare_tier(self, connection: AsyncioConnection, lost: Lost, tier: int | None) -> None:
        # A channel of its own: a declaration error closes it, not the publishing channel.
        channel, closed = await open_channel(connection, lost)
        try:
            await self.tiers.declare(channel, closed, tier)
        finally:
            close_quietly(channel)

    # -- connection lifecycle -------------------------------------------------------------------

    async def _set_up(self, connection: AsyncioConnection, lost: Lost) -> None:
        connection.add_on_connection_blocked_callback(self._on_blocked)
        connection.add_on_connection_unblocked_callback(self._on_unblocked)
        log_orphans(await apply_bindings(connection, lost, self.topology, self.bindings))
        channel, closed = await open_channel(connection, lost)
        tracker = ConfirmTracker()
        await rpc(closed, channel.confirm_delivery, ack_nack_callback=tracker.on_confirm)
        channel.add_on_close_callback(self._on_channel_closed)
        frame_max = getattr(connection, "_body_max_length", None)
        frame_max = frame_max + 8 if frame_max else connection.params.frame_max
        self._encoder = PublishEncoder(channel.channel_number, self.topology.exchange, frame_max)
        self._tracker, self._outbox, self._blocked = tracker, [], False
        self._declared = {}  # declared again on first use: the server may have lost them
        self._channel = channel

    def _on_channel_closed(self, channel: Channel, exc: BaseException) -> None:
        """Also called when the whole connection goes: pending confirms fail at once."""
        if channel is not self._channel:
            return
        self._channel = self._encoder = None
        self._fail(BrokerUnavailable(f"RabbitMQ channel closed: {exc!r}"))
        connection = self.link.connection
        if connection is not None and connection.is_open and not self._closing:
            close_quietly(connection)  # one recovery path: the link reconnects and sets up again

    def _on_blocked(self, _connection: Any, _frame: Any) -> None:
        self._blocked = True

    def _on_unblocked(self, _connection: Any, _frame: Any) -> None:
        self._blocked = False

    def start(self) -> None:
        self._closing = False
        self.link.start()

    async def rebind(self) -> None:
        """Apply changed bindings on the current connection (each new one applies them anyway)."""
        connection, lost = self.link.connection, self.link.lost
        if connection is None or lost is None or not connection.is_open:
            return
        try:
            log_orphans(await apply_bindings(connection, lost, self.topology, self.bindings))
        except BrokerUnavailable as exc:
            log.warning("cannot apply the bindings now (reconnecting to retry): %s", exc)
            close_quietly(connection)

    async def close(self, timeout: float) -> None:
        """Wait (up to `timeout`) for outstanding confirms, then disconnect; whatever is still
        unconfirmed then is reported as not confirmed (their `PublishUnconfirmed` futures too)."""
        self._closing = True
        waiting: list[asyncio.Future[Any]] = []
        for batch in self._tracker.pending:  # a caller that timed out still has `late` to settle
            future: asyncio.Future[Any] | None = batch.late if batch.waiter.done() else batch.waiter
            if future is not None and not future.done():
                waiting.append(future)
        if waiting:
            with contextlib.suppress(Exception):
                await asyncio.wait(waiting, timeout=timeout)
        self._channel = self._encoder = None  # nothing more goes out on a closing channel
        await self.link.close(timeout)
        self._fail(BrokerUnavailable("broker closed"))
