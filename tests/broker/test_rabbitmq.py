"""RabbitMQ-only behaviour: wire encoding, confirm bookkeeping, and surviving connection loss.

Connection loss is produced with a local TCP proxy (drop every connection, or hold the broker's
replies back) so that these tests never disturb other users of the shared server; one test also
closes the connection from the server side with rabbitmqctl when it is available.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from urllib.parse import urlparse

import pika
import pytest
from pika import frame, spec

from hookhub.broker import Binding, BrokerUnavailable, Topology, message_headers
from hookhub.broker.rabbitmq import PublishEncoder, RabbitMQBroker, _Batch
from hookhub.events import Event

from ._support import UNREACHABLE_AMQP, Harness, TCPProxy


def make_event(i: int = 0, type_: str = "com.test.thing", **kwargs) -> Event:
    return Event(
        id=f"evt-{i}", source="/s", type=type_, data=b"{}", datacontenttype="application/json", **kwargs
    )


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


# -- wire encoding: byte for byte what pika's basic_publish sends -------------------------------


def pika_frames(event: Event, exchange: str, frame_max: int, with_message_id: bool = True) -> bytes:
    props = pika.BasicProperties(
        content_type=event.datacontenttype,
        headers=message_headers(event),
        delivery_mode=2,
        message_id=event.id if with_message_id else None,
    )
    out = [
        frame.Method(1, spec.Basic.Publish(exchange=exchange, routing_key=event.type)).marshal(),
        frame.Header(1, len(event.data), props).marshal(),
    ]
    body_max = frame_max - 8
    for start in range(0, len(event.data), body_max):
        out.append(frame.Body(1, event.data[start : start + body_max]).marshal())
    return b"".join(out)


@pytest.mark.parametrize(
    "event",
    [
        make_event(1),
        make_event(2, correlationid="c", subject="s", dataschema="https://x/s", extensions={"tenant": "é✓"}),
        Event(id="no-ct", source="/s", type="a.b", data=b""),
        Event(id="big", source="/s", type="a.b", data=bytes(range(256)) * 2000, datacontenttype="x/y"),
        Event(id="exact", source="/s", type="a.b", data=b"z" * (4096 - 8)),
        Event(id="ünï", source="/s", type="com.ünï.code", data="ü".encode(), datacontenttype="text/plain"),
    ],
    ids=["plain", "extensions", "no-content-type", "multi-frame", "one-full-frame", "unicode"],
)
def test_encoder_matches_pika_byte_for_byte(event: Event):
    encoder = PublishEncoder(1, "ns.events", 4096)
    out: list[bytes] = []
    encoder.encode(event, out)
    encoder.encode(event, out)  # the cached method frame gives the same bytes
    assert b"".join(out) == pika_frames(event, "ns.events", 4096) * 2


def test_encoder_omits_an_over_long_message_id_and_rejects_an_over_long_type():
    event = Event(id="i" * 300, source="/s", type="a.b", data=b"x")
    encoder = PublishEncoder(1, "ex", 131072)
    out: list[bytes] = []
    encoder.encode(event, out)
    assert b"".join(out) == pika_frames(event, "ex", 131072, with_message_id=False)
    with pytest.raises(ValueError):
        encoder.encode(make_event(1, "t" * 256), [])


# -- confirm bookkeeping ------------------------------------------------------------------------


def confirm(broker: RabbitMQBroker, tag: int, multiple: bool = False, nack: bool = False) -> None:
    method = (spec.Basic.Nack if nack else spec.Basic.Ack)(delivery_tag=tag, multiple=multiple)
    broker._on_confirm(SimpleNamespace(method=method))


def with_batches(*ranges: tuple[int, int]) -> tuple[RabbitMQBroker, list[asyncio.Future[None]]]:
    broker = RabbitMQBroker(UNREACHABLE_AMQP, Topology("unit"))
    loop = asyncio.get_running_loop()
    futures = []
    for first, last in ranges:
        future: asyncio.Future[None] = loop.create_future()
        broker._pending.append(_Batch(first, last, future))
        futures.append(future)
    return broker, futures


def states(futures: list[asyncio.Future[None]]) -> list[str]:
    return ["pending" if not f.done() else "nack" if f.exception() else "ok" for f in futures]


async def test_multiple_acks_resolve_every_batch_up_to_the_tag():
    broker, futures = with_batches((1, 2), (3, 3), (4, 6))
    confirm(broker, 3, multiple=True)
    assert states(futures) == ["ok", "ok", "pending"]
    confirm(broker, 6, multiple=True)
    assert states(futures) == ["ok", "ok", "ok"]
    assert not broker._pending


async def test_single_acks_in_any_order_resolve_a_batch_once_all_its_tags_are_in():
    broker, futures = with_batches((1, 1), (2, 4))
    confirm(broker, 3)
    confirm(broker, 4)
    assert states(futures) == ["pending", "pending"]
    confirm(broker, 2)
    assert states(futures) == ["pending", "pending"]  # batches settle in tag order
    confirm(broker, 1)
    assert states(futures) == ["ok", "ok"]
    assert broker._confirmed == 4 and not broker._early


async def test_nack_fails_only_the_batches_it_covers():
    broker, futures = with_batches((1, 2), (3, 4), (5, 5), (6, 7))
    confirm(broker, 2, multiple=True)
    confirm(broker, 4, multiple=True, nack=True)  # covers 3..4
    confirm(broker, 6, nack=True)  # a single tag inside the last batch
    confirm(broker, 7, multiple=True)
    assert states(futures) == ["ok", "nack", "ok", "nack"]
    assert isinstance(futures[1].exception(), BrokerUnavailable)


async def test_a_caller_that_timed_out_does_not_break_later_confirms():
    broker, futures = with_batches((1, 1), (2, 2))
    futures[0].cancel()
    confirm(broker, 2, multiple=True)
    assert futures[1].result() is None


# -- against the server -------------------------------------------------------------------------


@pytest.fixture
async def rabbit(rabbitmq_url: str, namespace: str) -> AsyncIterator[Harness]:
    h = Harness("rabbitmq", rabbitmq_url, Topology(namespace), UNREACHABLE_AMQP)
    try:
        yield h
    finally:
        await h.cleanup()


@pytest.fixture
async def proxy(rabbitmq_url: str) -> AsyncIterator[TCPProxy]:
    target = urlparse(rabbitmq_url)
    p = TCPProxy(target.hostname or "127.0.0.1", target.port or 5672)
    try:
        yield p
    finally:
        await p.stop()


@pytest.mark.rabbitmq
async def test_reconnects_after_the_connection_drops(rabbit: Harness, proxy: TCPProxy):
    await proxy.start()
    queue = rabbit.sub("crm")
    broker = rabbit.broker(proxy.url)
    await broker.start([Binding(queue, ("#",))])
    await broker.publish([make_event(1)])

    proxy.drop()
    await wait_until(lambda: _not(broker.ready()), timeout=5)
    await wait_until(broker.ready, timeout=10)

    await broker.publish([make_event(2)])
    assert proxy.connections == 2
    assert [m.message_id for m in await rabbit.read(queue)] == ["evt-1", "evt-2"]


@pytest.mark.rabbitmq
async def test_outstanding_confirms_fail_when_the_connection_drops(rabbit: Harness, proxy: TCPProxy):
    await proxy.start()
    broker = rabbit.broker(proxy.url)
    await broker.start([Binding(rabbit.sub("crm"), ("#",))])
    proxy.hold_replies()  # the broker stores the messages but its confirms never arrive
    tasks = [asyncio.create_task(broker.publish([make_event(i)], timeout=30)) for i in range(20)]
    tasks.append(asyncio.create_task(broker.publish([make_event(i) for i in range(100, 200)], timeout=30)))
    await asyncio.sleep(0.3)
    assert not any(t.done() for t in tasks)

    started = time.monotonic()
    proxy.drop()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
    assert all(isinstance(r, BrokerUnavailable) for r in results), results
    assert time.monotonic() - started < 2

    proxy.release_replies()
    await wait_until(broker.ready)
    await broker.publish([make_event(300)])


@pytest.mark.rabbitmq
async def test_publish_times_out_without_confirm_then_recovers(rabbit: Harness, proxy: TCPProxy):
    await proxy.start()
    queue = rabbit.sub("crm")
    broker = rabbit.broker(proxy.url)
    await broker.start([Binding(queue, ("#",))])
    proxy.hold_replies()

    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=r"within 0\.3s"):
        await broker.publish([make_event(1)], timeout=0.3)
    assert time.monotonic() - started < 1

    proxy.release_replies()  # the late confirm is ignored; the next publish is tracked correctly
    await broker.publish([make_event(2)], timeout=5)
    assert [m.message_id for m in await rabbit.read(queue)] == ["evt-1", "evt-2"]  # at-least-once


@pytest.mark.rabbitmq
async def test_start_while_down_then_connects_when_the_broker_comes_up(rabbit: Harness, proxy: TCPProxy):
    broker = rabbit.broker(proxy.url)  # nothing listens on the proxy's port yet
    await broker.start([Binding(rabbit.sub("crm"), ("#",))])
    assert not await broker.ready()
    with pytest.raises(BrokerUnavailable):
        await broker.publish([make_event(1)])
    await asyncio.sleep(1.5)  # a few refused attempts, backing off

    await proxy.start()
    await wait_until(broker.ready, timeout=8)  # backoff is capped at 5 s
    await broker.publish([make_event(2)])


def _connection_pid(name: str) -> str | None:
    listing = subprocess.run(
        ["rabbitmqctl", "list_connections", "pid", "client_properties", "-q", "--no-table-headers"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    for line in listing.stdout.splitlines():
        if f'{{"connection_name","{name}"}}' in line:
            return line.split("\t", 1)[0]
    return None


def _skip_or_fail(reason: str) -> None:
    """A server-side close needs rabbitmqctl: skip without it, but fail under CI=true."""
    from tests.conftest import IN_CI

    if IN_CI:
        pytest.fail(f"{reason} (CI=true: RabbitMQ tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.mark.rabbitmq
async def test_reconnects_after_the_server_closes_the_connection(rabbit: Harness):
    if shutil.which("rabbitmqctl") is None:
        _skip_or_fail("rabbitmqctl not installed")
    queue = rabbit.sub("crm")
    name = f"hookhub-test-{rabbit.topology.namespace}"
    broker = rabbit.broker(connection_name=name)
    await broker.start([Binding(queue, ("#",))])
    await broker.publish([make_event(1)])
    pid = await asyncio.to_thread(_connection_pid, name)
    if pid is None:
        _skip_or_fail("rabbitmqctl cannot list connections here")

    closed = await asyncio.to_thread(
        subprocess.run,
        ["rabbitmqctl", "close_connection", pid, "test restart"],
        capture_output=True,
        timeout=30,
    )
    assert closed.returncode == 0, closed.stderr
    await wait_until(lambda: _not(broker.ready()), timeout=5)
    await wait_until(broker.ready, timeout=10)

    await broker.publish([make_event(2)])
    assert [m.message_id for m in await rabbit.read(queue)] == ["evt-1", "evt-2"]


@pytest.mark.rabbitmq
async def test_a_nack_fails_that_publish_only(rabbit: Harness):
    broker = rabbit.broker()
    ok_queue = rabbit.sub("ok")
    await broker.start([Binding(ok_queue, ("com.ok.#",))])
    full = rabbit.sub("full")  # a queue that refuses everything: RabbitMQ nacks what it routes there

    def declare_full() -> None:
        connection = pika.BlockingConnection(pika.URLParameters(rabbit.url))
        channel = connection.channel()
        channel.queue_declare(full, arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
        channel.queue_bind(full, rabbit.topology.exchange, "com.full.#")
        connection.close()

    await asyncio.to_thread(declare_full)

    results = await asyncio.gather(
        broker.publish([make_event(1, "com.ok.a")]),
        broker.publish([make_event(2, "com.full.a")]),
        broker.publish([make_event(3, "com.ok.a")]),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], BrokerUnavailable)
    assert await broker.ready()  # a nack is per message, the channel stays usable
    await broker.publish([make_event(4, "com.ok.b")])


@pytest.mark.rabbitmq
def test_publish_roundtrip_under_uvloop(rabbitmq_url: str, namespace: str):
    uvloop = pytest.importorskip("uvloop")

    async def main() -> list[str | None]:
        assert "uvloop" in type(asyncio.get_running_loop()).__module__
        h = Harness("rabbitmq", rabbitmq_url, Topology(namespace), UNREACHABLE_AMQP)
        try:
            broker = h.broker()
            queue = h.sub("crm")
            await broker.start([Binding(queue, ("#",))])
            assert await broker.ready()
            await asyncio.gather(*(broker.publish([make_event(i)]) for i in range(200)))
            return [m.message_id for m in await h.read(queue)]
        finally:
            await h.cleanup()

    assert uvloop.run(main()) == [f"evt-{i}" for i in range(200)]


async def _not(value: Awaitable[bool]) -> bool:
    return not await value
