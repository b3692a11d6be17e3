"""One self-healing AMQP connection: the reconnect loop the publisher and the consumers share."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import pika
from pika.adapters.asyncio_connection import AsyncioConnection

from hookhub.broker.base import BrokerUnavailable
from hookhub.broker.rabbitmq.amqp import BACKOFF_MAX, BACKOFF_MIN, Lost, close_quietly, open_connection

log = logging.getLogger(__name__)

# Runs on each new connection before it counts as up (declarations, a confirm channel); raising
# drops the connection and the loop tries again after its backoff.
SetUp = Callable[[AsyncioConnection, Lost], Awaitable[None]]


class Link:
    """Keeps one connection open, reconnecting with capped backoff after any loss.

    `connection` is None while down: callers fail fast rather than wait for a reconnect."""

    def __init__(self, params: pika.URLParameters, what: str, set_up: SetUp | None = None) -> None:
        self._params = params
        self._what = what
        self._set_up = set_up
        self.connection: AsyncioConnection | None = None
        self.lost: Lost | None = None
        self._up = asyncio.Event()
        self._attempted = asyncio.Event()  # the first connection attempt is over
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._closing = False
        if not self.running:
            self._attempted.clear()
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"hookhub-{self._what}")

    async def first_attempt(self, timeout: float) -> None:
        """Wait (up to `timeout`) for the first connection attempt's outcome."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._attempted.wait(), timeout)

    async def wait_up(self) -> tuple[AsyncioConnection, Lost]:
        """The open connection, waiting for one as long as it takes."""
        while True:
            await self._up.wait()
            connection, lost = self.connection, self.lost
            if connection is not None and lost is not None and not lost.done():
                return connection, lost
            await asyncio.sleep(BACKOFF_MIN)

    def open(self) -> tuple[AsyncioConnection, Lost]:
        """The open connection now, or `BrokerUnavailable`."""
        connection, lost = self.connection, self.lost
        if connection is None or lost is None or lost.done() or not connection.is_open:
            raise BrokerUnavailable("not connected to RabbitMQ")
        return connection, lost

    async def close(self, timeout: float) -> None:
        self._closing = True
        connection, lost = self.connection, self.lost
        if connection is not None:
            close_quietly(connection)
            if lost is not None:
                await asyncio.wait([lost], timeout=timeout)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._up.clear()
        self.connection = None

    async def _run(self) -> None:
        delay = BACKOFF_MIN
        loop = asyncio.get_running_loop()
        while not self._closing:
            lost: Lost = loop.create_future()
            try:
                connection = await open_connection(self._params, lost)
                try:
                    if self._set_up is not None:
                        await self._set_up(connection, lost)
                except BaseException:
                    close_quietly(connection)
                    raise
            except Exception as exc:
                log.warning("RabbitMQ %s connection failed (retry in %.1fs): %s", self._what, delay, exc)
                self._attempted.set()
            else:
                self.connection, self.lost = connection, lost
                self._up.set()
                self._attempted.set()
                log.info("RabbitMQ %s connection up: %s:%s", self._what, self._params.host, self._params.port)
                delay = BACKOFF_MIN
                reason = await lost
                self._up.clear()
                self.connection = None
                if self._closing:
                    break
                log.warning("RabbitMQ %s connection lost (reconnecting): %s", self._what, reason)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
