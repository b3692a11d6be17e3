"""Test helpers: one harness per broker kind, reading queues back around the broker, injecting
raw messages, and a TCP proxy to break connections.

Reading back goes around the broker under test (pika BlockingConnection, plain sqlite3, the
in-memory server's own lists), so a test checks what actually landed in the queues, not what the
broker thinks it wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import pika

from hookhub.broker import Broker, Topology, event_from_message
from hookhub.broker.base import DEAD_REASON_HEADER, HEADER_PREFIX
from hookhub.broker.memory import MemoryBroker, MemoryServer
from hookhub.broker.sqlite import MESSAGES_TABLE, SQLiteBroker, sqlite_path
from hookhub.clock import SYSTEM_CLOCK, Clock
from hookhub.events import Event

UNREACHABLE_AMQP = "amqp://guest:guest@127.0.0.1:1/%2F"  # port 1: connection refused at once
UNREACHABLE_MEMORY = "memory://down"  # the harness's server that is down


@dataclass
class Message:
    queue: str
    routing_key: str
    headers: dict[str, Any]  # only the CloudEvents ones (quorum queues add x-delivery-count)
    body: bytes
    content_type: str | None = None
    message_id: str | None = None
    delivery_mode: int | None = None
    reason: str | None = None  # why it is in the dead queue

    @property
    def event(self) -> Event:
        return event_from_message(self.headers, self.body)


@dataclass
class Harness:
    """One broker kind under test, with a fresh namespace; closes and cleans up at teardown.

    Every broker it makes shares one set of queues (one RabbitMQ vhost, one SQLite file, one
    `MemoryServer`), so two brokers stand for two processes of one deployment.
    """

    kind: str
    url: str
    topology: Topology
    unreachable_url: str
    brokers: list[Broker] = field(default_factory=list)
    queues: set[str] = field(default_factory=set)
    clock: Clock = SYSTEM_CLOCK  # the memory kind's; the others run on real time
    server: MemoryServer = field(default_factory=MemoryServer)
    down_server: MemoryServer = field(default_factory=MemoryServer)

    def __post_init__(self) -> None:
        self.down_server.down = True

    def sub(self, name: str) -> str:
        queue = self.topology.subscription_queue(name)
        self.queues.add(queue)
        return queue

    def broker(self, url: str | None = None, **kwargs: Any) -> Broker:
        url = url or self.url
        broker: Broker
        if self.kind == "rabbitmq":
            from hookhub.broker.rabbitmq import RabbitMQBroker

            kwargs.setdefault("connection_name", f"hookhub-test-{self.topology.namespace}")
            broker = RabbitMQBroker(url, self.topology, **kwargs)
        elif self.kind == "memory":
            server = self.down_server if url == UNREACHABLE_MEMORY else self.server
            broker = MemoryBroker(self.topology, self.clock, server=server, **kwargs)
        else:
            broker = SQLiteBroker(url, self.topology, **kwargs)
        self.brokers.append(broker)
        return broker

    async def read(self, queue: str) -> list[Message]:
        """Drain `queue` and return its messages in queue order."""
        if self.kind == "rabbitmq":
            return await asyncio.to_thread(rabbit_drain, self.url, queue)
        if self.kind == "memory":
            return memory_drain(self.server, queue)
        return sqlite_drain(self.url, queue)

    async def inject(self, queue: str, headers: dict[str, Any], body: bytes) -> None:
        """Put a raw message into `queue` around the broker, as a foreign publisher could: a
        `bytes` header value is sent as raw bytes (invalid UTF-8 stays invalid)."""
        self.queues.add(queue)
        if self.kind == "rabbitmq":
            await asyncio.to_thread(rabbit_inject, self.url, queue, headers, body)
        elif self.kind == "memory":
            self.server.inject(queue, headers, body)
        else:
            sqlite_inject(self.url, queue, headers, body)

    async def crash(self, broker: Broker) -> None:
        """Make `broker` stop as a killed process would: its consumers neither settle nor renew
        their leases (RabbitMQ: the connection closes, which gives them back at once)."""
        if self.kind != "rabbitmq":
            for consumer in list(broker._consumers):  # type: ignore[attr-defined]
                await consumer._halt()
        await broker.close()

    async def cleanup(self) -> None:
        for broker in self.brokers:
            with contextlib.suppress(Exception):
                await broker.close()
        if self.kind == "rabbitmq":
            delay = {n for b in self.brokers for n in getattr(b, "delay_names", ())}
            await asyncio.to_thread(rabbit_delete_topology, self.url, self.topology, self.queues, delay)


def _ce_headers(headers: Any) -> dict[str, Any]:
    return {k: v for k, v in (headers or {}).items() if isinstance(k, str) and k.startswith(HEADER_PREFIX)}


def _text(value: Any) -> str | None:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def memory_drain(server: MemoryServer, queue: str) -> list[Message]:
    out = []
    for m in server.drain(queue):
        headers = _ce_headers(m.headers)
        content_type = _text(headers.get(HEADER_PREFIX + "datacontenttype"))
        message_id = _text(headers.get(HEADER_PREFIX + "id"))
        out.append(Message(queue, m.routing_key, headers, m.body, content_type, message_id, 2, m.dead_reason))
    return out


def rabbit_drain(url: str, queue: str) -> list[Message]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        out: list[Message] = []
        while True:
            method, props, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return out
            out.append(
                Message(
                    queue,
                    method.routing_key,
                    _ce_headers(props.headers),
                    body,
                    props.content_type,
                    props.message_id,
                    props.delivery_mode,
                    _text((props.headers or {}).get(DEAD_REASON_HEADER)),
                )
            )
    finally:
        connection.close()


def rabbit_inject(url: str, queue: str, headers: dict[str, Any], body: bytes) -> None:
    """Publish straight into `queue` through the default exchange, as another client could."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        properties = pika.BasicProperties(headers=headers, delivery_mode=2)
        channel.basic_publish("", queue, body, properties, mandatory=True)
    finally:
        connection.close()


def rabbit_delete_topology(
    url: str, topology: Topology, queues: set[str], delay_names: set[str] | frozenset[str] = frozenset()
) -> None:
    """Delete a test namespace: its queues, exchanges, redeliver exchange and delay tiers
    (a tier's exchange and queue share its name; deleting what was never declared is fine)."""
    from hookhub.broker.rabbitmq import redeliver_exchange
    from hookhub.broker.rabbitmq.topology import record_queue

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        fixed = {topology.unrouted_queue, topology.dead_queue, topology.archive_queue, record_queue(topology)}
        for queue in {*fixed, *queues, *delay_names}:
            channel.queue_delete(queue)
        for exchange in (topology.exchange, topology.unrouted_exchange, redeliver_exchange(topology)):
            channel.exchange_delete(exchange)
        for exchange in delay_names:
            channel.exchange_delete(exchange)
    finally:
        connection.close()


def _rabbitmqctl_names(what: str, prefix: str) -> set[str]:
    if shutil.which("rabbitmqctl") is None:
        return set()
    listing = subprocess.run(
        ["rabbitmqctl", what, "name", "-q", "--no-table-headers"], capture_output=True, text=True, timeout=30
    )
    return {name for name in listing.stdout.split() if name.startswith(prefix)}


def delete_namespace_queues(url: str, namespace: str) -> None:
    """Delete everything a hub declared under `namespace` when the test does not know its
    subscription names (e.g. a hub run as a subprocess): every queue and exchange named
    `<namespace>.*` that rabbitmqctl lists, plus the fixed names if rabbitmqctl is missing."""
    from hookhub.broker.rabbitmq import DEFAULT_DELAY_TIERS, delay_name

    topology = Topology(namespace)
    delay = {delay_name(topology, t) for t in DEFAULT_DELAY_TIERS}
    queues = _rabbitmqctl_names("list_queues", f"{namespace}.") | delay
    exchanges = _rabbitmqctl_names("list_exchanges", f"{namespace}.") | delay
    rabbit_delete_topology(url, topology, queues, frozenset(exchanges))


def sqlite_drain(url: str, queue: str) -> list[Message]:
    connection = sqlite3.connect(sqlite_path(url), isolation_level=None)
    try:
        rows = connection.execute(
            f"DELETE FROM {MESSAGES_TABLE} WHERE queue = ? "
            "RETURNING seq, routing_key, CAST(headers AS BLOB), CAST(body AS BLOB), dead_reason",
            (queue,),
        ).fetchall()
    finally:
        connection.close()
    out = []
    for _seq, routing_key, raw_headers, body, reason in sorted(rows):
        headers = {
            k: _unescape(v) for k, v in json.loads(raw_headers.decode(errors="surrogateescape")).items()
        }
        content_type = headers.get(HEADER_PREFIX + "datacontenttype")
        message_id = headers.get(HEADER_PREFIX + "id")
        out.append(Message(queue, routing_key, headers, body, content_type, message_id, 2, reason))
    return out


def _unescape(value: Any) -> Any:
    """A header value `sqlite_inject` wrote as raw invalid UTF-8 back to its bytes."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return value.encode(errors="surrogateescape")
    return value


def sqlite_inject(url: str, queue: str, headers: dict[str, Any], body: bytes) -> None:
    """INSERT a row as another writer could: the headers JSON is built by hand so that a bytes
    value lands as raw (possibly invalid UTF-8) bytes inside its string."""
    parts = []
    for key, value in headers.items():
        encoded = b'"' + value + b'"' if isinstance(value, bytes) else json.dumps(value).encode()
        parts.append(json.dumps(key).encode() + b":" + encoded)
    routing_key = headers.get(HEADER_PREFIX + "type")
    now = time.time()
    connection = sqlite3.connect(sqlite_path(url), isolation_level=None)
    try:
        connection.execute(
            f"INSERT INTO {MESSAGES_TABLE} (queue, routing_key, headers, body, enqueued_at, available_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                queue,
                routing_key if isinstance(routing_key, str) else "",
                b"{" + b",".join(parts) + b"}",
                body,
                now,
                now,
            ),
        )
    finally:
        connection.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TCPProxy:
    """Forwards 127.0.0.1:port to a server; can hold back replies and drop every connection,
    which is how a test makes a broker look slow, restarted or gone without touching the server
    other tests share."""

    def __init__(self, host: str, port: int, listen_port: int | None = None) -> None:
        self.target = (host, port)
        self.port = listen_port or free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._replies = asyncio.Event()
        self._replies.set()
        self.connections = 0

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.drop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def hold_replies(self) -> None:
        self._replies.clear()

    def release_replies(self) -> None:
        self._replies.set()

    def drop(self) -> None:
        """Reset every proxied connection on both sides, like a broker restart."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.transport.abort()
            return
        self.connections += 1
        self._writers.update((client_w, server_w))
        for coro in (self._pipe(client_r, server_w, False), self._pipe(server_r, client_w, True)):
            task = asyncio.get_running_loop().create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reply: bool) -> None:
        try:
            while data := await reader.read(65536):
                if reply:
                    await self._replies.wait()
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()
            self._writers.discard(writer)
