"""RabbitMQ broker: pika's asyncio adapter on the running loop, pipelined publisher confirms.

One connection, one channel in confirm mode. `publish` writes all its messages at once and waits
for the broker's Basic.Ack/Nack (which may cover many delivery tags with `multiple=True`), so any
number of publishes are in flight together: confirm-each would cap us near 700 msg/s, pipelining
reaches what the server can take (~17k msg/s to a quorum queue on one node).

The publish frames are marshalled here rather than by `Channel.basic_publish`: the method frame
depends only on the routing key and is cached, the property flags and header keys are constant,
so a message costs a few `bytes` joins instead of pika's generic per-property encoder (the output
is byte-for-byte what pika produces; tests compare them). This is the ingest hot path.

The connection lives in a background task that reconnects with capped backoff after any loss;
`publish` never waits for a reconnect, it fails fast with `BrokerUnavailable`.

Consuming uses a second connection (RabbitMQ blocks a publishing connection under a resource
alarm; the consumers, whose acks are what frees the memory, must not stall with it), one channel
per `consume` with its own `basic.qos` prefetch, so a stalled handler on one queue never holds up
another. After a reconnect every consumer re-opens its channel and re-subscribes; deliveries of
the dead channel cannot be settled any more (their settle calls are no-ops) and RabbitMQ hands
them out again with `redelivered` set.

Delayed delivery without the delayed-message plugin: fixed TTL "tiers" (powers of two, 1 s to
~4.5 h by default), each a fanout exchange `<ns>.delay.<tier>` into a quorum queue with that
`x-message-ttl`, dead-lettering at-least-once into the direct exchange `<ns>.redeliver`, where
every subscription queue is bound under its own name. `schedule` publishes (confirmed, through the
same pipelined encoder) into the largest tier not beyond the due time, with the target queue as
routing key and the attempt and not-before time as headers. A consumer that gets a message early
re-parks it for the remainder (binary steps: at most log2(delay) hops, fewer than the 1-5-30 s
style ladders need) or, under the smallest tier, holds it until due; the handler never sees it
early. Powers of two, because jittered backoff asks for arbitrary delays: every delay is a sum of
few tiers, and the common 1, 2, 4, 8 s retries are exactly one hop. The redeliver exchange's
alternate exchange is `<ns>.unrouted`, so a retry for a queue nobody bound is kept, not dropped.
Each tier is declared on first use: quorum queues cost the server a Raft log and file handles.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import pika
import pika.exceptions
from pika import spec
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.channel import Channel

from hookhub.broker.base import (
    ATTEMPT_HEADER,
    HEADER_PREFIX,
    NOT_BEFORE_HEADER,
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
)
from hookhub.events import Event

log = logging.getLogger(__name__)

BACKOFF_MIN = 0.2
BACKOFF_MAX = 5.0
RPC_TIMEOUT = 10.0
SCHEDULE_TIMEOUT = 5.0  # confirm wait of `schedule` / `retry` (their signature has no timeout)
DEFAULT_DELAY_TIERS: tuple[float, ...] = tuple(float(2**k) for k in range(15))  # 1 s .. 16384 s
QUORUM = {"x-queue-type": "quorum"}

_FRAME_END = b"\xce"
_BODY_FRAME = struct.Struct(">BHI")
_PROPS_HEAD = struct.Struct(">HHQH")
_U32 = struct.Struct(">I").pack
_FLAG_CONTENT_TYPE = 1 << 15
_FLAG_HEADERS = 1 << 13
_FLAG_DELIVERY_MODE = 1 << 12
_FLAG_MESSAGE_ID = 1 << 7
_PERSISTENT = b"\x02"


def _shortstr(value: str) -> bytes | None:
    data = value.encode()
    return bytes((len(data),)) + data if len(data) <= 255 else None


_ATTEMPT_FIELD = bytes((len(ATTEMPT_HEADER),)) + ATTEMPT_HEADER.encode() + b"I"  # signed 32-bit
_NOT_BEFORE_FIELD = bytes((len(NOT_BEFORE_HEADER),)) + NOT_BEFORE_HEADER.encode() + b"l"  # signed 64-bit
_I32 = struct.Struct(">i").pack
_I64 = struct.Struct(">q").pack


def schedule_headers(attempt: int, not_before_ms: int) -> bytes:
    """The scheduling headers as encoded table entries (what pika writes for these ints)."""
    return _ATTEMPT_FIELD + _I32(attempt) + _NOT_BEFORE_FIELD + _I64(not_before_ms)


def redeliver_exchange(topology: Topology) -> str:
    return f"{topology.namespace}.redeliver"


def delay_name(topology: Topology, seconds: float) -> str:
    """Exchange and queue name of one delay tier: `<ns>.delay.4s`, `<ns>.delay.250ms`."""
    ms = round(seconds * 1000)
    return (
        f"{topology.namespace}.delay.{ms // 1000}s"
        if ms % 1000 == 0
        else f"{topology.namespace}.delay.{ms}ms"
    )


class PublishEncoder:
    """Marshals Basic.Publish + content header + body frames exactly as pika would for
    properties (content_type, headers=message_headers(event), delivery_mode=2, message_id)."""

    def __init__(self, channel_number: int, exchange: str, frame_max: int) -> None:
        self.channel_number = channel_number
        self.exchange = exchange
        self.body_max = frame_max - 8  # frame header (7) + frame end (1)
        self._method_frames: dict[str | tuple[str, str], bytes] = {}
        self._keys: dict[str, bytes] = {}  # attribute name -> shortstr(prefix + name) + b"S"
        self._header_frame_head = struct.pack(">BH", spec.FRAME_HEADER, channel_number)
        self._body_frame_head = struct.pack(">BH", spec.FRAME_BODY, channel_number)

    def method_frame(self, routing_key: str, exchange_name: str | None = None) -> bytes:
        cache_key = routing_key if exchange_name is None else (exchange_name, routing_key)
        frame = self._method_frames.get(cache_key)
        if frame is None:
            exchange = _shortstr(self.exchange if exchange_name is None else exchange_name)
            key = _shortstr(routing_key)
            if exchange is None or key is None:
                raise ValueError(f"AMQP exchange and routing key are limited to 255 bytes: {routing_key!r}")
            payload = struct.pack(">HHH", 60, 40, 0) + exchange + key + b"\x00"
            frame = (
                _BODY_FRAME.pack(spec.FRAME_METHOD, self.channel_number, len(payload)) + payload + _FRAME_END
            )
            if len(self._method_frames) > 10_000:  # event types are few; bound the cache anyway
                self._method_frames.clear()
            self._method_frames[cache_key] = frame
        return frame

    def _key(self, name: str) -> bytes:
        key = _shortstr(HEADER_PREFIX + name)
        if key is None:
            raise ValueError(f"attribute name too long for an AMQP header: {name!r}")
        self._keys[name] = key + b"S"
        return self._keys[name]

    def encode(
        self,
        event: Event,
        out: list[bytes],
        *,
        exchange: str | None = None,
        routing_key: str | None = None,
        extra_headers: bytes = b"",
    ) -> None:
        """Append the frames of one message to `out` (the caller joins a whole batch once).

        By default to the encoder's exchange with the event type as routing key; `schedule`
        passes a delay exchange, the target queue and the encoded `schedule_headers`."""
        keys = self._keys
        table: list[bytes] = []
        for name, value in event.attributes().items():
            data = value.encode()
            table += (keys.get(name) or self._key(name), _U32(len(data)), data)
        if extra_headers:
            table.append(extra_headers)
        headers = b"".join(table)
        flags = _FLAG_HEADERS | _FLAG_DELIVERY_MODE
        content_type = _shortstr(event.datacontenttype) if event.datacontenttype is not None else None
        if content_type is not None:
            flags |= _FLAG_CONTENT_TYPE
        message_id = _shortstr(event.id)  # over 255 bytes: omitted, the id is in the headers anyway
        if message_id is not None:
            flags |= _FLAG_MESSAGE_ID
        body = event.data
        size = len(body)
        props = b"".join(
            (
                _PROPS_HEAD.pack(60, 0, size, flags),
                content_type or b"",
                _U32(len(headers)),
                headers,
                _PERSISTENT,
                message_id or b"",
            )
        )
        out += (
            self.method_frame(event.type if routing_key is None else routing_key, exchange),
            self._header_frame_head,
            _U32(len(props)),
            props,
            _FRAME_END,
        )
        body_max = self.body_max
        if size <= body_max:
            if size:
                out += (self._body_frame_head, _U32(size), body, _FRAME_END)
            return
        view = memoryview(body)
        for start in range(0, size, body_max):
            chunk = view[start : start + body_max]
            out += (self._body_frame_head, _U32(len(chunk)), chunk.tobytes(), _FRAME_END)


class _Batch:
    """The delivery tags of one `publish` call and the future its caller awaits."""

    __slots__ = ("first", "future", "last")

    def __init__(self, first: int, last: int, future: asyncio.Future[None]) -> None:
        self.first = first
        self.last = last
        self.future = future


class RabbitMQBroker(Broker):
    """Publishes to `topology.exchange` and consumes subscription queues over two self-healing
    pika asyncio connections; delayed retries through TTL tiers (see the module docstring)."""

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
        self._params = pika.URLParameters(url)
        self._params.client_properties = {"connection_name": connection_name, "product": "hookhub"}
        self._consumer_params = pika.URLParameters(url)
        self._consumer_params.client_properties = {
            "connection_name": f"{connection_name}-consume",
            "product": "hookhub",
        }
        tiers = sorted({round(t * 1000) for t in delay_tiers})
        if not tiers or tiers[0] <= 0:
            raise ValueError("delay tiers must be positive")
        self._tier_seconds = [ms / 1000 for ms in tiers]
        self._tier_names = [delay_name(topology, t) for t in self._tier_seconds]
        self._redeliver = redeliver_exchange(topology)
        self._delay_declared: dict[int | None, asyncio.Task[None]] = {}  # per publisher connection
        self._consumers: set[_RabbitConsumer] = set()
        self._consumer_link: asyncio.Task[None] | None = None
        self._consumer_connection: AsyncioConnection | None = None
        self._consumer_lost: asyncio.Future[BaseException | None] | None = None
        self._consumer_up = asyncio.Event()
        self._start_timeout = start_timeout
        self._close_timeout = close_timeout
        self._bindings: tuple[Binding, ...] = ()
        self._connection: AsyncioConnection | None = None
        self._channel: Channel | None = None  # set only while open and in confirm mode
        self._encoder: PublishEncoder | None = None
        self._blocked = False
        self._next_tag = 1
        self._confirmed = 0  # every tag <= this is settled (acked or nacked)
        self._early: set[int] = set()  # single acks above the watermark (out of order)
        self._pending: deque[_Batch] = deque()
        self._outbox: list[bytes] = []  # frames of this loop iteration's publishes, not yet written
        self._flush_scheduled = False
        self._lost: asyncio.Future[BaseException | None] | None = None  # set when the connection goes
        self._task: asyncio.Task[None] | None = None
        self._attempted: asyncio.Event | None = None
        self._closing = False

    # -- Broker API ---------------------------------------------------------------------------

    async def start(self, bindings: Sequence[Binding] = ()) -> None:
        """Start connecting in the background; wait (up to `start_timeout`) only for the first
        attempt's outcome, so a hub with a reachable broker is ready when `start` returns."""
        self._bindings = tuple(bindings)
        self._closing = False
        if self._task is None or self._task.done():
            self._attempted = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="hookhub-rabbitmq")
        assert self._attempted is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._attempted.wait(), self._start_timeout)

    async def publish(self, events: Sequence[Event], timeout: float = 5.0) -> None:
        if not events:
            return
        encoder = self._writable()
        # Frames go to an outbox flushed once per loop iteration: the many single-event publishes
        # of concurrent requests leave in one transport write (one send syscall), not one each.
        outbox = self._outbox
        mark = len(outbox)
        encode = encoder.encode
        try:
            for event in events:
                encode(event, outbox)
        except BaseException:  # e.g. ValueError on an over-long type: nothing of this batch goes out
            del outbox[mark:]
            raise
        await self._await_confirms(len(events), timeout)

    def _writable(self) -> PublishEncoder:
        connection, encoder = self._connection, self._encoder
        if self._channel is None or connection is None or encoder is None or not connection.is_open:
            raise BrokerUnavailable("not connected to RabbitMQ")
        if self._blocked:
            raise BrokerUnavailable("RabbitMQ is blocking publishers (resource alarm)")
        return encoder

    async def _await_confirms(self, count: int, timeout: float) -> None:
        """Wait for the confirms of the `count` messages just put in the outbox (no await may come
        between encoding them and this call: their delivery tags are assigned here)."""
        first = self._next_tag
        last = first + count - 1
        self._next_tag = last + 1
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append(_Batch(first, last, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        handle = loop.call_later(timeout, _expire, future, timeout)
        try:
            await future
        finally:
            handle.cancel()

    def _flush(self) -> None:
        self._flush_scheduled = False
        outbox, self._outbox = self._outbox, []
        connection = self._connection
        if not outbox or connection is None or self._channel is None:
            return  # a lost connection has already failed these batches
        data = b"".join(outbox)
        try:
            connection._adapter_emit_data(data)  # buffered; sent as soon as the socket is writable
        except Exception as exc:  # the transport is gone but pika has not told us yet
            self._fail_pending(BrokerUnavailable(f"RabbitMQ connection broken: {exc!r}"))
            return
        connection.bytes_sent += len(data)

    async def ready(self) -> bool:
        connection = self._connection
        return (
            self._channel is not None and connection is not None and connection.is_open and not self._blocked
        )

    async def close(self) -> None:
        self._closing = True
        for consumer in list(self._consumers):  # unsettled deliveries go back to their queues
            await consumer.cancel()
        await self._close_consumer_link()
        if self._pending:
            await asyncio.wait([b.future for b in self._pending], timeout=self._close_timeout)
        connection, lost = self._connection, self._lost
        self._channel = self._encoder = None  # nothing more goes out on a closing channel
        if connection is not None and connection.is_open:
            connection.close()
            if lost is not None:
                await asyncio.wait([lost], timeout=self._close_timeout)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail_pending(BrokerUnavailable("broker closed"))

    async def queue_depths(self) -> dict[str, int]:
        connection = self._connection
        if self._channel is None or connection is None:
            raise BrokerUnavailable("not connected to RabbitMQ")
        queues = list(dict.fromkeys([self.topology.unrouted_queue, *(b.queue for b in self._bindings)]))
        depths: dict[str, int] = {}
        channel, closed = await self._open_channel(connection)
        try:
            for queue in queues:
                if not channel.is_open:  # a missing queue (404) closes the channel: open another
                    channel, closed = await self._open_channel(connection)
                try:
                    frame = await _rpc(closed, channel.queue_declare, queue=queue, passive=True)
                except BrokerUnavailable:
                    if not connection.is_open:
                        raise
                    depths[queue] = 0
                    continue
                depths[queue] = frame.method.message_count
        finally:
            if channel.is_open:
                channel.close()
        return depths

    @property
    def delay_names(self) -> tuple[str, ...]:
        """The delay tiers' exchange (= queue) names, for operators and test cleanup."""
        return tuple(self._tier_names)

    # -- consume side ------------------------------------------------------------------------

    async def consume(self, queue: str, handler: DeliveryHandler, *, prefetch: int, lease: float) -> Consumer:
        """`lease` does not apply here: a delivery stays with this consumer until its connection
        goes (RabbitMQ's own `consumer_timeout`, 30 min by default, is the upper bound)."""
        if not 1 <= prefetch <= 65535:
            raise ValueError("prefetch must be between 1 and 65535 (AMQP basic.qos)")
        if self._task is None or self._closing:
            raise BrokerUnavailable("the RabbitMQ broker is not started or closed")
        if self._consumer_link is None or self._consumer_link.done():
            self._consumer_link = asyncio.get_running_loop().create_task(
                self._run_consumer_link(), name="hookhub-rabbitmq-consume"
            )
        consumer = _RabbitConsumer(self, queue, handler, prefetch)
        self._consumers.add(consumer)
        consumer.start()
        await consumer.wait_attached(self._start_timeout)  # subscribed when we return, if reachable
        return consumer

    async def ack(self, delivery: Delivery) -> None:
        receipt = _claim(delivery)
        if receipt is not None:
            receipt.send(ack=True)

    async def release(self, delivery: Delivery) -> None:
        receipt = _claim(delivery)
        if receipt is not None:
            receipt.send(ack=False)

    async def retry(self, delivery: Delivery, delay: float) -> None:
        """Schedule the copy (confirmed), then ack the original. On a delivery whose channel is
        gone this is a no-op: RabbitMQ hands the original out again, and a copy would double it."""
        receipt = _receipt(delivery)
        if receipt.settled or not receipt.live():
            _claim(delivery)
            return
        receipt.settled = True  # a concurrent settle of the same delivery is now a no-op
        try:
            await self.schedule(delivery.queue, delivery.event, attempt=delivery.attempt + 1, delay=delay)
        except BaseException:
            receipt.settled = False  # still the handler's (or `cancel`'s) to settle
            raise
        receipt.consumer.settle(receipt)
        if receipt.live():
            receipt.send(ack=True)

    async def schedule(self, queue: str, event: Event, *, attempt: int, delay: float) -> None:
        if attempt < 1:
            raise ValueError("attempt starts at 1")
        await self._park(queue, event, attempt, time.time() + max(delay, 0.0))

    def _tier_for(self, remaining: float) -> int | None:
        """Index of the largest tier not longer than `remaining`; None under the smallest."""
        index = bisect.bisect_right(self._tier_seconds, remaining) - 1
        return index if index >= 0 else None

    async def _park(self, queue: str, event: Event, attempt: int, not_before: float) -> None:
        """Publish `event` for `queue`, due at `not_before` (unix seconds), confirmed."""
        tier = self._tier_for(not_before - time.time())
        await self._ensure_declared(tier)
        encoder = self._writable()
        exchange = self._redeliver if tier is None else self._tier_names[tier]
        extra = schedule_headers(attempt, math.ceil(not_before * 1000))
        outbox = self._outbox
        mark = len(outbox)
        try:
            encoder.encode(event, outbox, exchange=exchange, routing_key=queue, extra_headers=extra)
        except BaseException:
            del outbox[mark:]
            raise
        await self._await_confirms(1, SCHEDULE_TIMEOUT)

    def _redeliver_declaration(self) -> dict[str, Any]:
        return {
            "exchange": self._redeliver,
            "exchange_type": "direct",
            "durable": True,
            "arguments": {"alternate-exchange": self.topology.unrouted_exchange},
        }

    async def _ensure_declared(self, tier: int | None) -> None:
        """Declare a tier (with the redeliver exchange) on its first use per publisher connection:
        an ingest-only process never declares any, and a hub only the few its delays need
        (each tier is a quorum queue: a Raft log and file handles on the server)."""
        task = self._delay_declared.get(tier)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            connection = self._connection
            if connection is None or not connection.is_open:
                raise BrokerUnavailable("not connected to RabbitMQ")
            task = asyncio.get_running_loop().create_task(self._declare_tier(connection, tier))
            self._delay_declared[tier] = task
        await asyncio.shield(task)

    async def _declare_tier(self, connection: AsyncioConnection, tier: int | None) -> None:
        # A channel of its own: a declaration error closes it, not the publishing channel.
        channel, closed = await self._open_channel(connection)
        try:
            await _rpc(closed, channel.exchange_declare, **self._redeliver_declaration())
            if tier is None:
                return
            name = self._tier_names[tier]
            arguments = {
                **QUORUM,
                "x-message-ttl": round(self._tier_seconds[tier] * 1000),
                "x-dead-letter-exchange": self._redeliver,
                # quorum queues dead-letter at-least-once only with reject-publish overflow
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            }
            await _rpc(closed, channel.exchange_declare, exchange=name, exchange_type="fanout", durable=True)
            await _rpc(closed, channel.queue_declare, queue=name, durable=True, arguments=arguments)
            await _rpc(closed, channel.queue_bind, queue=name, exchange=name, routing_key="")
        finally:
            if channel.is_open:
                channel.close()

    async def _run_consumer_link(self) -> None:
        """Keep the consumer connection open; consumers (re)attach whenever it is up."""
        delay = BACKOFF_MIN
        loop = asyncio.get_running_loop()
        while not self._closing:
            lost: asyncio.Future[BaseException | None] = loop.create_future()
            try:
                connection = await _open_connection(self._consumer_params, lost)
            except Exception as exc:
                log.warning("RabbitMQ consumer connection failed (retry in %.1fs): %s", delay, exc)
            else:
                self._consumer_connection, self._consumer_lost = connection, lost
                self._consumer_up.set()
                delay = BACKOFF_MIN
                reason = await lost
                self._consumer_up.clear()
                self._consumer_connection = None
                if self._closing:
                    break
                log.warning("RabbitMQ consumer connection lost (reconnecting): %s", reason)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _wait_consumer_connection(
        self,
    ) -> tuple[AsyncioConnection, asyncio.Future[BaseException | None]]:
        while True:
            await self._consumer_up.wait()
            connection, lost = self._consumer_connection, self._consumer_lost
            if connection is not None and lost is not None and not lost.done():
                return connection, lost
            await asyncio.sleep(BACKOFF_MIN)

    async def _close_consumer_link(self) -> None:
        connection, lost = self._consumer_connection, self._consumer_lost
        if connection is not None and connection.is_open:
            connection.close()
            if lost is not None:
                await asyncio.wait([lost], timeout=self._close_timeout)
        task, self._consumer_link = self._consumer_link, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._consumer_up.clear()
        self._consumer_connection = None

    # -- connection lifecycle -----------------------------------------------------------------

    async def _run(self) -> None:
        delay = BACKOFF_MIN
        assert self._attempted is not None
        while not self._closing:
            try:
                await self._connect()
            except Exception as exc:
                log.warning("RabbitMQ connection failed (retry in %.1fs): %s", delay, exc)
                self._drop_connection()
                self._attempted.set()
            else:
                self._attempted.set()
                delay = BACKOFF_MIN
                assert self._lost is not None
                reason = await self._lost
                if self._closing:
                    break
                log.warning("RabbitMQ connection lost (reconnecting): %s", reason)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[BaseException | None] = loop.create_future()
        lost: asyncio.Future[BaseException | None] = loop.create_future()
        self._lost = lost

        def on_open(_conn: Any) -> None:
            _settle(opened, None)

        def on_open_error(_conn: Any, exc: BaseException) -> None:
            _settle(opened, exc)
            _settle(lost, exc)

        def on_close(conn: Any, exc: BaseException) -> None:
            self._on_connection_lost(conn, exc)
            _settle(lost, exc)

        connection = AsyncioConnection(self._params, on_open, on_open_error, on_close, custom_ioloop=loop)
        self._connection = connection
        try:
            error = await opened
            if error is not None:
                raise BrokerUnavailable(f"cannot connect: {error!r}")
            connection.add_on_connection_blocked_callback(self._on_blocked)
            connection.add_on_connection_unblocked_callback(self._on_unblocked)
            channel, closed = await self._open_channel(connection)
            await self._declare(channel, closed)
            await _rpc(closed, channel.confirm_delivery, ack_nack_callback=self._on_confirm)
        except BaseException:
            self._drop_connection()
            raise
        channel.add_on_close_callback(self._on_channel_closed)
        frame_max = getattr(connection, "_body_max_length", None)
        frame_max = frame_max + 8 if frame_max else self._params.frame_max
        self._encoder = PublishEncoder(channel.channel_number, self.topology.exchange, frame_max)
        self._next_tag, self._confirmed, self._early, self._outbox = 1, 0, set(), []
        self._blocked = False
        self._delay_declared = {}  # declared again on first use: the server may have lost them
        self._channel = channel
        log.info("connected to RabbitMQ %s:%s", self._params.host, self._params.port)

    async def _open_channel(
        self,
        connection: AsyncioConnection,
        lost: asyncio.Future[BaseException | None] | None = None,
    ) -> tuple[Channel, asyncio.Future[BaseException | None]]:
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[Channel] = loop.create_future()
        closed: asyncio.Future[BaseException | None] = loop.create_future()
        try:
            channel = connection.channel(on_open_callback=lambda ch: _settle(opened, ch))
        except Exception as exc:  # connection closing under us
            raise BrokerUnavailable(f"cannot open a channel: {exc!r}") from exc
        channel.add_on_close_callback(lambda _ch, exc: _settle(closed, exc))
        lost = lost or self._lost
        waits: list[asyncio.Future[Any]] = [opened, closed] + ([lost] if lost is not None else [])
        await asyncio.wait(waits, timeout=RPC_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if not opened.done():
            raise BrokerUnavailable(
                f"channel did not open: {closed.result() if closed.done() else 'timeout'}"
            )
        return channel, closed

    async def _declare(self, channel: Channel, closed: asyncio.Future[BaseException | None]) -> None:
        t = self.topology
        quorum = {"x-queue-type": "quorum"}
        await _rpc(
            closed,
            channel.exchange_declare,
            exchange=t.unrouted_exchange,
            exchange_type="fanout",
            durable=True,
        )
        await _rpc(
            closed,
            channel.exchange_declare,
            exchange=t.exchange,
            exchange_type="topic",
            durable=True,
            arguments={"alternate-exchange": t.unrouted_exchange},
        )
        await _rpc(closed, channel.queue_declare, queue=t.unrouted_queue, durable=True, arguments=quorum)
        await _rpc(
            closed, channel.queue_bind, queue=t.unrouted_queue, exchange=t.unrouted_exchange, routing_key=""
        )
        if self._bindings:  # subscription queues get their retries back through `<ns>.redeliver`
            await _rpc(closed, channel.exchange_declare, **self._redeliver_declaration())
        for binding in self._bindings:
            await _rpc(closed, channel.queue_declare, queue=binding.queue, durable=True, arguments=quorum)
            for pattern in dict.fromkeys(binding.patterns):
                await _rpc(
                    closed, channel.queue_bind, queue=binding.queue, exchange=t.exchange, routing_key=pattern
                )
            await _rpc(
                closed,
                channel.queue_bind,
                queue=binding.queue,
                exchange=self._redeliver,
                routing_key=binding.queue,
            )

    def _drop_connection(self) -> None:
        """Forget the current connection after a failure, closing it if it is still up."""
        connection, self._connection = self._connection, None
        self._channel = self._encoder = None
        if connection is not None and not (connection.is_closed or connection.is_closing):
            with contextlib.suppress(Exception):
                connection.close()

    # -- pika callbacks (run on the event loop) -------------------------------------------------

    def _on_connection_lost(self, connection: Any, exc: BaseException) -> None:
        if connection is not self._connection:
            return
        self._connection = None
        self._channel = self._encoder = None
        self._fail_pending(BrokerUnavailable(f"RabbitMQ connection lost: {exc!r}"))

    def _on_channel_closed(self, channel: Channel, exc: BaseException) -> None:
        if channel is not self._channel:
            return
        self._channel = self._encoder = None
        self._fail_pending(BrokerUnavailable(f"RabbitMQ channel closed: {exc!r}"))
        connection = self._connection
        if connection is not None and connection.is_open and not self._closing:
            connection.close()  # one recovery path: the reconnect loop opens everything again

    def _on_blocked(self, _connection: Any, _frame: Any) -> None:
        self._blocked = True

    def _on_unblocked(self, _connection: Any, _frame: Any) -> None:
        self._blocked = False

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag: int = method.delivery_tag
        multiple: bool = method.multiple
        pending = self._pending
        if isinstance(method, spec.Basic.Nack):
            low = self._confirmed + 1 if multiple else tag
            error = BrokerUnavailable("RabbitMQ refused the message (nack)")
            for batch in pending:
                if batch.first > tag:
                    break
                if batch.last >= low and not batch.future.done():
                    batch.future.set_exception(error)
        confirmed = self._confirmed
        early = self._early
        if multiple:
            if tag > confirmed:
                confirmed = tag
            if early:
                early.difference_update([t for t in early if t <= confirmed])
        elif tag == confirmed + 1:
            confirmed = tag
        elif tag > confirmed:
            early.add(tag)
        while early and confirmed + 1 in early:
            confirmed += 1
            early.discard(confirmed)
        self._confirmed = confirmed
        while pending and pending[0].last <= confirmed:
            future = pending.popleft().future
            if not future.done():
                future.set_result(None)

    def _fail_pending(self, error: BrokerUnavailable) -> None:
        self._outbox = []  # their delivery tags belong to a channel that is gone
        pending, self._pending = self._pending, deque()
        for batch in pending:
            if not batch.future.done():
                batch.future.set_exception(error)


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _expire(future: asyncio.Future[None], timeout: float) -> None:
    if not future.done():
        future.set_exception(BrokerUnavailable(f"no confirm from RabbitMQ within {timeout:g}s"))


async def _rpc(
    closed: asyncio.Future[BaseException | None], method: Callable[..., Any], **kwargs: Any
) -> Any:
    """Call a pika channel method with a completion callback; fail if the channel closes."""
    done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    method(callback=lambda frame: _settle(done, frame), **kwargs)
    await asyncio.wait([done, closed], timeout=RPC_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
    if done.done():
        return done.result()
    reason = closed.result() if closed.done() else f"no reply within {RPC_TIMEOUT:g}s"
    raise BrokerUnavailable(f"RabbitMQ {getattr(method, '__name__', 'call')} failed: {reason}")


class _RabbitReceipt(Receipt):
    __slots__ = ("channel", "consumer", "tag")

    def __init__(self, consumer: _RabbitConsumer, channel: Channel, tag: int) -> None:
        super().__init__()
        self.consumer = consumer
        self.channel = channel  # delivery tags mean something only on the channel that sent them
        self.tag = tag

    def live(self) -> bool:
        return bool(self.channel.is_open)

    def send(self, *, ack: bool) -> None:
        try:
            if ack:
                self.channel.basic_ack(self.tag)
            else:
                self.channel.basic_nack(self.tag, requeue=True)
        except (pika.exceptions.ChannelWrongStateError, pika.exceptions.ConnectionWrongStateError):
            log.debug("delivery %s: channel closed meanwhile; RabbitMQ redelivers it", self.tag)


def _receipt(delivery: Delivery) -> _RabbitReceipt:
    receipt = delivery.receipt
    if not isinstance(receipt, _RabbitReceipt):
        raise TypeError(f"not a delivery of the RabbitMQ broker: {receipt!r}")
    return receipt


def _claim(delivery: Delivery) -> _RabbitReceipt | None:
    """Mark the delivery settled; the receipt if an ack/nack can still go out on its channel."""
    receipt = _receipt(delivery)
    if receipt.settled:
        log.debug("event %s from %s already settled", delivery.event.id, delivery.queue)
        return None
    receipt.settled = True
    receipt.consumer.settle(receipt)
    if not receipt.live():
        log.debug("event %s: its channel is gone, RabbitMQ redelivers it", delivery.event.id)
        return None
    return receipt


class _RabbitConsumer(Consumer):
    """One channel consuming one queue; re-subscribes on every new consumer connection."""

    def __init__(self, broker: RabbitMQBroker, queue: str, handler: DeliveryHandler, prefetch: int) -> None:
        self.queue = queue
        self.reparked = 0  # early arrivals sent back to a delay tier (for tests and metrics)
        self._broker = broker
        self._prefetch = prefetch
        self._tasks = HandlerTasks(queue, handler, broker.release)
        self._unsettled: set[_RabbitReceipt] = set()
        self._channel: Channel | None = None
        self._channel_closed: asyncio.Future[BaseException | None] | None = None
        self._consumer_tag: str | None = None
        self._cancelled = False
        self._runner: asyncio.Task[None] | None = None
        self._attempted = asyncio.Event()  # the first subscription attempt is over

    @property
    def in_flight(self) -> int:
        """Deliveries handed out on the current channel and not settled yet."""
        return len(self._unsettled)

    def start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(
            self._run(), name=f"hookhub-consume-{self.queue}"
        )

    async def wait_attached(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._attempted.wait(), timeout)

    def settle(self, receipt: _RabbitReceipt) -> None:
        self._unsettled.discard(receipt)

    async def _run(self) -> None:
        delay = BACKOFF_MIN
        while not self._cancelled:
            connection, lost = await self._broker._wait_consumer_connection()
            try:
                closed = await self._attach(connection, lost)
            except Exception as exc:  # BrokerUnavailable, or pika's state errors mid-close
                self._attempted.set()
                log.warning("cannot consume %s (retry in %.1fs): %r", self.queue, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            self._attempted.set()
            delay = BACKOFF_MIN
            await asyncio.wait([closed, lost], return_when=asyncio.FIRST_COMPLETED)
            self._unsettled.clear()  # RabbitMQ has requeued them; their settle calls are no-ops
            self._channel = None
            if not self._cancelled:
                reason = closed.result() if closed.done() else lost.result() if lost.done() else None
                log.warning("consumer channel of %s closed (re-subscribing): %s", self.queue, reason)
                await asyncio.sleep(BACKOFF_MIN)

    async def _attach(
        self, connection: AsyncioConnection, lost: asyncio.Future[BaseException | None]
    ) -> asyncio.Future[BaseException | None]:
        broker = self._broker
        channel, closed = await broker._open_channel(connection, lost)
        try:
            # Idempotent declarations, so consuming works in any order with `start` and after
            # the server lost its definitions; the queue gets its retries through `<ns>.redeliver`.
            await _rpc(closed, channel.exchange_declare, **broker._redeliver_declaration())
            await _rpc(closed, channel.queue_declare, queue=self.queue, durable=True, arguments=QUORUM)
            await _rpc(
                closed,
                channel.queue_bind,
                queue=self.queue,
                exchange=broker._redeliver,
                routing_key=self.queue,
            )
            await _rpc(closed, channel.basic_qos, prefetch_count=self._prefetch)
            channel.add_on_cancel_callback(self._on_server_cancel)
            self._channel, self._channel_closed = channel, closed
            frame = await _rpc(
                closed, channel.basic_consume, queue=self.queue, on_message_callback=self._on_message
            )
            self._consumer_tag = frame.method.consumer_tag
        except BaseException:
            self._channel = None
            if channel.is_open:
                channel.close()
            raise
        return closed

    def _on_server_cancel(self, _frame: Any) -> None:
        """The server dropped the subscription (queue deleted...): start over on a new channel."""
        channel = self._channel
        if channel is not None and channel.is_open:
            channel.close()

    def _on_message(self, channel: Channel, method: Any, props: Any, body: bytes) -> None:
        tag: int = method.delivery_tag
        if self._cancelled:  # in flight when we cancelled: straight back
            with contextlib.suppress(pika.exceptions.AMQPError):
                channel.basic_nack(tag, requeue=True)
            return
        headers = props.headers or {}
        try:
            event = event_from_message(headers, body)
            attempt = int(headers.get(ATTEMPT_HEADER) or 1)
            not_before = headers.get(NOT_BEFORE_HEADER)
            due_ms = int(not_before) if not_before is not None else 0
        except Exception:  # not something hookhub published: it can never be delivered
            log.exception(
                "dropping an undecodable message (message id %s) from %s", props.message_id, self.queue
            )
            channel.basic_nack(tag, requeue=False)
            return
        receipt = _RabbitReceipt(self, channel, tag)
        self._unsettled.add(receipt)
        delivery = Delivery(event, self.queue, attempt, bool(method.redelivered), receipt)
        if due_ms and due_ms > time.time() * 1000:
            self._tasks.spawn(self._early(delivery, due_ms / 1000))
        else:
            self._tasks.spawn(self._tasks.run(delivery))

    async def _early(self, delivery: Delivery, not_before: float) -> None:
        """A message ahead of its time (tier rounding, clock skew): re-park it in a delay tier
        for the remainder, or, under the smallest tier, hold it here until due."""
        broker = self._broker
        remaining = not_before - time.time()
        if broker._tier_for(remaining) is not None:
            try:
                await broker._park(self.queue, delivery.event, delivery.attempt, not_before)
            except (BrokerUnavailable, ValueError) as exc:
                log.warning("cannot re-park event %s for %.1fs: %s", delivery.event.id, remaining, exc)
                await asyncio.sleep(min(remaining, BACKOFF_MAX))  # no hot loop while publishing fails
                await broker.release(delivery)
                return
            self.reparked += 1
            await broker.ack(delivery)
            return
        if remaining > 0:
            await asyncio.sleep(remaining)
        await self._tasks.run(delivery)

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
                await _rpc(closed, channel.basic_cancel, consumer_tag=tag)
        await self._tasks.wait(grace)
        for receipt in self._unsettled:
            receipt.settled = True  # closing the channel requeues them; later settles are no-ops
        self._unsettled.clear()
        if channel is not None and closed is not None and channel.is_open:
            channel.close()
            await asyncio.wait([closed], timeout=self._broker._close_timeout)
        self._channel = None
        await self._tasks.stop()
        self._broker._consumers.discard(self)


async def _open_connection(
    params: pika.URLParameters, lost: asyncio.Future[BaseException | None]
) -> AsyncioConnection:
    """Open a pika asyncio connection on the running loop; `lost` settles when it closes."""
    loop = asyncio.get_running_loop()
    opened: asyncio.Future[BaseException | None] = loop.create_future()

    def on_open_error(_conn: Any, exc: BaseException) -> None:
        _settle(opened, exc)
        _settle(lost, exc)

    connection = AsyncioConnection(
        params,
        lambda _conn: _settle(opened, None),
        on_open_error,
        lambda _conn, exc: _settle(lost, exc),
        custom_ioloop=loop,
    )
    try:
        error = await opened
    except BaseException:
        with contextlib.suppress(Exception):
            connection.close()
        raise
    if error is not None:
        raise BrokerUnavailable(f"cannot connect: {error!r}")
    return connection
