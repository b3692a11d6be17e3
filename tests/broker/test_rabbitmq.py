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

from hookhub.broker import Binding, BrokerUnavailable, PublishUnconfirmed, Topology, message_headers
from hookhub.broker.rabbitmq.confirms import ConfirmTracker
from hookhub.broker.rabbitmq.encoder import PublishEncoder, UnencodableEvent
from hookhub.broker.rabbitmq.topology import record_queue
from hookhub.events import Event

from ._support import UNREACHABLE_AMQP, Harness, TCPProxy


def make_event(i: int = 0, type_: str = "com.test.thing", **kwargs) -> Event:
    return Event(
        id=f"evt-{i}", source="/s", type=type_, data=b"{}", datacontenttype="application/json", **kwargs
    )


def unchecked(event: Event, **changes: object) -> Event:
    """`event` with attributes no valid Event can have (set after validation), to reach the
    encoder's own limits: the frame format's, whatever `Event` allows now or later."""
    for name, value in changes.items():
        setattr(event, name, value)
    return event


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


def test_encoder_omits_an_over_long_message_id():
    event = unchecked(Event(id="i", source="/s", type="a.b", data=b"x"), id="i" * 300)
    encoder = PublishEncoder(1, "ex", 131072)
    out: list[bytes] = []
    encoder.encode(event, out)
    assert b"".join(out) == pika_frames(event, "ex", 131072, with_message_id=False)


@pytest.mark.parametrize(
    "event",
    [
        unchecked(make_event(1), type="t" * 256),
        unchecked(make_event(2), extensions={"k" * 260: "v"}),  # header name over 255 bytes
        unchecked(make_event(3), extensions={"big": "x" * 5000}),  # headers larger than the frame
        unchecked(make_event(4), subject="s" * 4000),
    ],
    ids=["type", "header-name", "header-table", "subject"],
)
def test_encoder_refuses_before_writing_any_byte(event: Event):
    encoder = PublishEncoder(1, "ex", 4096)
    out: list[bytes] = [b"earlier"]
    with pytest.raises(UnencodableEvent):
        encoder.encode(event, out)
    assert out == [b"earlier"]


# -- confirm bookkeeping ------------------------------------------------------------------------


def confirm(tracker: ConfirmTracker, tag: int, multiple: bool = False, nack: bool = False) -> None:
    method = (spec.Basic.Nack if nack else spec.Basic.Ack)(delivery_tag=tag, multiple=multiple)
    tracker.on_confirm(SimpleNamespace(method=method))


def with_batches(*sizes: int) -> tuple[ConfirmTracker, list[asyncio.Future[None]]]:
    tracker = ConfirmTracker()
    return tracker, [tracker.track(size).waiter for size in sizes]


def states(futures: list[asyncio.Future[None]]) -> list[str]:
    return ["pending" if not f.done() else "nack" if f.exception() else "ok" for f in futures]


async def test_multiple_acks_resolve_every_batch_up_to_the_tag():
    tracker, futures = with_batches(2, 1, 3)
    confirm(tracker, 3, multiple=True)
    assert states(futures) == ["ok", "ok", "pending"]
    confirm(tracker, 6, multiple=True)
    assert states(futures) == ["ok", "ok", "ok"]
    assert not tracker.pending


async def test_single_acks_in_any_order_resolve_a_batch_once_all_its_tags_are_in():
    tracker, futures = with_batches(1, 3)
    confirm(tracker, 3)
    confirm(tracker, 4)
    assert states(futures) == ["pending", "pending"]
    confirm(tracker, 2)
    assert states(futures) == ["pending", "pending"]  # batches settle in tag order
    confirm(tracker, 1)
    assert states(futures) == ["ok", "ok"]
    assert tracker.confirmed == 4 and not tracker.early


async def test_nack_fails_only_the_batches_it_covers():
    tracker, futures = with_batches(2, 2, 1, 2)
    confirm(tracker, 2, multiple=True)
    confirm(tracker, 4, multiple=True, nack=True)  # covers 3..4
    confirm(tracker, 6, nack=True)  # a single tag inside the last batch
    confirm(tracker, 7, multiple=True)
    assert states(futures) == ["ok", "nack", "ok", "nack"]
    assert isinstance(futures[1].exception(), BrokerUnavailable)


async def test_a_caller_that_timed_out_does_not_break_later_confirms():
    tracker, futures = with_batches(1, 1)
    futures[0].cancel()
    confirm(tracker, 2, multiple=True)
    assert futures[1].result() is None


async def test_an_expired_batch_learns_its_outcome_later():
    tracker = ConfirmTracker()
    acked, nacked, lost = tracker.track(1), tracker.track(1), tracker.track(1)
    for batch in (acked, nacked, lost):
        batch.expire(0.5)
    unconfirmed = [b.waiter.exception() for b in (acked, nacked, lost)]
    assert all(isinstance(e, PublishUnconfirmed) for e in unconfirmed)
    late = [e.confirmed for e in unconfirmed if isinstance(e, PublishUnconfirmed)]
    confirm(tracker, 1)
    confirm(tracker, 2, nack=True)
    assert [f.result() if f.done() else None for f in late] == [True, False, None]
    tracker.fail_all(BrokerUnavailable("gone"))
    assert late[2].result() is False


# -- against the server -------------------------------------------------------------------------


@pytest.fixture
async def rabbit(rabbitmq_url: str, namespace: str) -> AsyncIterator[Harness]:
    h = Harness("rabbitmq", rabbitmq_url, Topology(namespace), UNREACHABLE_AMQP)
    h.queues.update((h.topology.dead_queue, record_queue(h.topology)))  # deleted at cleanup
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

    proxy.release_replies()  # the late confirm settles the caller's future; tags stay in step
    await broker.publish([make_event(2)], timeout=5)
    assert [m.message_id for m in await rabbit.read(queue)] == ["evt-1", "evt-2"]  # at-least-once


@pytest.mark.rabbitmq
async def test_a_confirm_later_than_the_timeout_resolves_the_unconfirmed_future(rabbit: Harness):
    queue = rabbit.sub("crm")
    broker = rabbit.broker()
    await broker.start([Binding(queue, ("#",))])

    with pytest.raises(PublishUnconfirmed) as raised:
        await broker.publish([make_event(1)], timeout=1e-6)  # sent, but no broker confirms that fast
    assert await asyncio.wait_for(raised.value.confirmed, 5) is True

    assert [m.message_id for m in await rabbit.read(queue)] == ["evt-1"]  # stored exactly once


@pytest.mark.rabbitmq
async def test_an_unconfirmed_future_resolves_false_when_the_broker_closes(rabbit: Harness, proxy: TCPProxy):
    await proxy.start()
    broker = rabbit.broker(proxy.url, close_timeout=0.3)
    await broker.start([Binding(rabbit.sub("crm"), ("#",))])
    proxy.hold_replies()
    with pytest.raises(PublishUnconfirmed) as raised:
        await broker.publish([make_event(1)], timeout=0.2)
    assert not raised.value.confirmed.done()

    await broker.close()  # no confirm can come any more: the answer is "not confirmed"
    assert raised.value.confirmed.result() is False


@pytest.mark.rabbitmq
async def test_an_unencodable_event_fails_alone_and_the_connection_stays_up(rabbit: Harness, proxy: TCPProxy):
    await proxy.start()
    queue = rabbit.sub("crm")
    broker = rabbit.broker(proxy.url)
    await broker.start([Binding(queue, ("#",))])
    too_big = unchecked(make_event(999), extensions={"huge": "x" * 200_000})  # > frame_max (128 KiB)

    results = await asyncio.gather(
        *(broker.publish([make_event(i)]) for i in range(50)),
        broker.publish([too_big]),
        *(broker.publish([make_event(i)]) for i in range(50, 100)),
        return_exceptions=True,
    )

    assert isinstance(results[50], UnencodableEvent)
    assert [r for i, r in enumerate(results) if i != 50] == [None] * 100
    await asyncio.sleep(0.3)  # a corrupt frame would make the server close the connection now
    assert await broker.ready()
    await broker.publish([make_event(100)])
    assert proxy.connections == 1  # the publishing connection, never reconnected
    ids = [str(m.message_id) for m in await rabbit.read(queue)]
    assert sorted(ids) == sorted(f"evt-{i}" for i in range(101))


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

    command = ["rabbitmqctl", "close_connection", str(pid), "test restart"]
    closed = await asyncio.to_thread(lambda: subprocess.run(command, capture_output=True, timeout=30))
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
