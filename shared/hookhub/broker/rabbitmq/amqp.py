"""Small awaitable wrappers around pika's callback API, shared by every part of the broker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pika
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.channel import Channel

from hookhub.broker.base import BrokerUnavailable

BACKOFF_MIN = 0.2
BACKOFF_MAX = 5.0
RPC_TIMEOUT = 10.0
QUORUM = {"x-queue-type": "quorum"}

Lost = asyncio.Future[BaseException | None]  # settles when a connection or channel closes


def settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


async def rpc(closed: Lost, method: Callable[..., Any], **kwargs: Any) -> Any:
    """Call a pika channel method with a completion callback; fail if the channel closes."""
    done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    method(callback=lambda frame: settle(done, frame), **kwargs)
    await asyncio.wait([done, closed], timeout=RPC_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
    if done.done():
        return done.result()
    reason = closed.result() if closed.done() else f"no reply within {RPC_TIMEOUT:g}s"
    raise BrokerUnavailable(f"RabbitMQ {getattr(method, '__name__', 'call')} failed: {reason}")


async def open_connection(params: pika.URLParameters, lost: Lost) -> AsyncioConnection:
    """Open a pika asyncio connection on the running loop; `lost` settles when it closes."""
    loop = asyncio.get_running_loop()
    opened: asyncio.Future[BaseException | None] = loop.create_future()

    def on_open_error(_conn: Any, exc: BaseException) -> None:
        settle(opened, exc)
        settle(lost, exc)

    connection = AsyncioConnection(
        params,
        lambda _conn: settle(opened, None),
        on_open_error,
        lambda _conn, exc: settle(lost, exc),
        custom_ioloop=loop,
    )
    try:
        error = await opened
    except BaseException:
        close_quietly(connection)
        raise
    if error is not None:
        raise BrokerUnavailable(f"cannot connect: {error!r}")
    return connection


async def open_channel(connection: AsyncioConnection, lost: Lost | None = None) -> tuple[Channel, Lost]:
    """A new channel and the future that settles when it closes."""
    loop = asyncio.get_running_loop()
    opened: asyncio.Future[Channel] = loop.create_future()
    closed: Lost = loop.create_future()
    try:
        channel = connection.channel(on_open_callback=lambda ch: settle(opened, ch))
    except Exception as exc:  # connection closing under us
        raise BrokerUnavailable(f"cannot open a channel: {exc!r}") from exc
    channel.add_on_close_callback(lambda _ch, exc: settle(closed, exc))
    waits: list[asyncio.Future[Any]] = [opened, closed] + ([lost] if lost is not None else [])
    await asyncio.wait(waits, timeout=RPC_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
    if not opened.done():
        close_quietly(channel)
        raise BrokerUnavailable(f"channel did not open: {closed.result() if closed.done() else 'timeout'}")
    return channel, closed


def close_quietly(target: AsyncioConnection | Channel) -> None:
    """Close a connection or channel unless it is already closing (pika raises then)."""
    if not (target.is_closed or target.is_closing):
        with contextlib.suppress(Exception):
            target.close()
