"""Ceiling D, "durable limit": the least a receiver pays that answers 2xx only after the broker's confirm.

A raw ASGI app (no framework, like bench.bare_asgi) that reads each request body, publishes it
persistent to the exchange named in BENCH_EXCHANGE (bound to a quorum queue by bench.ceilings), and
answers 202 once RabbitMQ has confirmed it. Confirms are pipelined: one pika channel in confirm
mode on uvicorn's own event loop (AsyncioConnection), a future per delivery tag, resolved by
Basic.Ack (also `multiple` acks) and failed by Basic.Nack. No verification, validation or dedup,
so whatever the hub spends on those shows up as its distance from this app.
GET answers 200 once the channel is in confirm mode (the readiness probe), 503 before.
"""

from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import pika
import pika.spec
from pika.adapters.asyncio_connection import AsyncioConnection

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ROUTING_KEY = "com.github.push"
_ACCEPTED = b'{"status":"accepted"}'
_OK = b'{"status":"ok"}'
_UNAVAILABLE = b'{"status":"unavailable"}'
_PROPS = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent, content_type="application/json")


class ConfirmingPublisher:
    """One connection, one confirm-mode channel, and the futures of the unconfirmed publishes."""

    def __init__(self, url: str, exchange: str) -> None:
        self.params = pika.URLParameters(url)
        self.exchange = exchange
        self.conn: AsyncioConnection | None = None
        self.channel: Any = None
        self.ready = False
        self.next_tag = 0
        # Tags are handed out in order, so a `multiple` ack confirms a prefix of this dict.
        self.pending: OrderedDict[int, asyncio.Future[None]] = OrderedDict()
        self._opened: asyncio.Future[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._opened = loop.create_future()
        self.conn = AsyncioConnection(
            self.params,
            on_open_callback=lambda conn: conn.channel(on_open_callback=self._on_channel),
            on_open_error_callback=lambda _conn, err: self._fail_open(err),
            on_close_callback=lambda _conn, reason: self._on_closed(reason),
            custom_ioloop=loop,
        )
        await asyncio.wait_for(self._opened, timeout=30)

    def _fail_open(self, err: BaseException) -> None:
        if self._opened and not self._opened.done():
            self._opened.set_exception(RuntimeError(f"cannot connect to RabbitMQ: {err!r}"))

    def _on_channel(self, channel: Any) -> None:
        self.channel = channel
        channel.add_on_close_callback(lambda _ch, reason: self._on_closed(reason))
        channel.confirm_delivery(self._on_confirm, callback=self._on_confirm_mode)

    def _on_confirm_mode(self, _frame: Any) -> None:
        self.ready = True
        if self._opened and not self._opened.done():
            self._opened.set_result(None)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag = method.delivery_tag
        if method.multiple:
            done = []
            while self.pending and next(iter(self.pending)) <= tag:
                done.append(self.pending.popitem(last=False)[1])
        else:
            fut = self.pending.pop(tag, None)
            done = [fut] if fut is not None else []
        nacked = isinstance(method, pika.spec.Basic.Nack)
        for fut in done:
            if fut.done():
                continue
            if nacked:
                fut.set_exception(RuntimeError("nacked by the broker"))
            else:
                fut.set_result(None)

    def _on_closed(self, reason: Any) -> None:
        """A lost channel or connection fails every unconfirmed publish: none may be answered 202."""
        self.ready = False
        self._fail_open(reason)
        while self.pending:
            fut = self.pending.popitem(last=False)[1]
            if not fut.done():
                fut.set_exception(RuntimeError(f"channel closed: {reason!r}"))

    def publish(self, body: bytes) -> asyncio.Future[None]:
        """Publish `body`; the future resolves when the broker confirms it."""
        if not self.ready:
            raise RuntimeError("not connected")
        self.channel.basic_publish(self.exchange, ROUTING_KEY, body, _PROPS)
        self.next_tag += 1
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending[self.next_tag] = fut
        return fut

    def close(self) -> None:
        if self.conn is not None and self.conn.is_open:
            self.conn.close()


_publisher: ConfirmingPublisher | None = None


def _start(status: int, body: bytes) -> Message:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return {"type": "http.response.start", "status": status, "headers": headers}


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send(_start(status, body))
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    global _publisher
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                _publisher = ConfirmingPublisher(os.environ["BENCH_AMQP_URL"], os.environ["BENCH_EXCHANGE"])
                await _publisher.start()
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _publisher is not None:
                _publisher.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """POST: publish the body and answer 202 after the confirm (503 if refused); GET: readiness."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    chunks = []
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    ready = _publisher is not None and _publisher.ready
    if scope["method"] != "POST":
        await (_answer(send, 200, _OK) if ready else _answer(send, 503, _UNAVAILABLE))
        return
    try:
        assert _publisher is not None
        await _publisher.publish(b"".join(chunks))
    except Exception:
        await _answer(send, 503, _UNAVAILABLE)
        return
    await _answer(send, 202, _ACCEPTED)
