"""RabbitMQ-only consume behaviour: delay tiers and re-parking, surviving connection loss.

Connection loss comes from a local TCP proxy that drops every connection, so these tests never
disturb other users of the shared server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from urllib.parse import urlparse

import pika
import pytest
from pika import frame, spec

from hookhub.broker import Binding, Topology, message_headers
from hookhub.broker.base import ATTEMPT_HEADER, DEAD_REASON_HEADER, NOT_BEFORE_HEADER, Lease
from hookhub.broker.rabbitmq import RabbitMQBroker, delay_name
from hookhub.broker.rabbitmq.consumer import FROM_QUEUE_HEADER
from hookhub.broker.rabbitmq.encoder import PublishEncoder, schedule_headers
from hookhub.broker.rabbitmq.topology import record_queue
from hookhub.events import Event

from ._support import UNREACHABLE_AMQP, Harness, TCPProxy
from .test_consume import Inbox, depth_is, wait_until


def make_event(i: int = 0, type_: str = "com.test.thing") -> Event:
    return Event(id=f"evt-{i}", source="/s", type=type_, data=b"{}", datacontenttype="application/json")


def test_schedule_frames_match_pika_byte_for_byte():
    event = make_event(1)
    not_before_ms = 1_795_000_000_123
    props = pika.BasicProperties(
        content_type=event.datacontenttype,
        headers={**message_headers(event), ATTEMPT_HEADER: 3, NOT_BEFORE_HEADER: not_before_ms},
        delivery_mode=2,
        message_id=event.id,
    )
    expected = b"".join(
        (
            frame.Method(1, spec.Basic.Publish(exchange="ns.delay.4s", routing_key="ns.sub.crm")).marshal(),
            frame.Header(1, len(event.data), props).marshal(),
            frame.Body(1, event.data).marshal(),
        )
    )
    encoder = PublishEncoder(1, "ns.events", 131072)
    out: list[bytes] = []
    encoder.encode(
        event,
        out,
        exchange="ns.delay.4s",
        routing_key="ns.sub.crm",
        extra_headers=schedule_headers(3, not_before_ms),
    )
    assert b"".join(out) == expected
    plain: list[bytes] = []
    encoder.encode(event, plain)  # the cached frame for another exchange does not leak into publish
    assert b"ns.events" in plain[0] and b"ns.delay" not in plain[0]


def test_tier_choice_never_overshoots():
    broker = RabbitMQBroker(UNREACHABLE_AMQP, Topology("unit"), delay_tiers=(0.25, 1, 0.5, 2))
    assert broker.delay_names == ("unit.delay.250ms", "unit.delay.500ms", "unit.delay.1s", "unit.delay.2s")
    pick = {r: broker.tiers.tier_for(r) for r in (0.1, 0.25, 0.7, 1.0, 1.99, 2.0, 3600)}
    assert pick == {0.1: None, 0.25: 0, 0.7: 1, 1.0: 2, 1.99: 2, 2.0: 3, 3600: 3}
    assert delay_name(Topology("hookhub"), 16384) == "hookhub.delay.16384s"
    with pytest.raises(ValueError):
        RabbitMQBroker(UNREACHABLE_AMQP, Topology("unit"), delay_tiers=(0,))


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
async def test_an_early_arrival_is_reparked_for_the_remainder(rabbit: Harness):
    """1.6 s with tiers 250 ms / 500 ms / 1 s: through the 1 s tier, re-parked in the 500 ms
    tier, then held the last 100 ms; the handler sees it once, on time, attempt unchanged."""
    queue = rabbit.sub("crm")
    broker = rabbit.broker(delay_tiers=(0.25, 0.5, 1.0))
    assert isinstance(broker, RabbitMQBroker)
    await broker.start([Binding(queue, ("#",))])
    inbox = Inbox()
    consumer = await broker.consume(queue, inbox, prefetch=4, lease=30)

    scheduled_at = time.monotonic()
    await broker.schedule(queue, make_event(1), attempt=4, delay=1.6)
    arrived_at, lease = await inbox.get_timed()

    assert arrived_at - scheduled_at >= 1.6
    assert arrived_at - scheduled_at < 2.5
    assert lease.attempt == 4
    assert getattr(consumer, "reparked", None) == 1
    await broker.ack(lease)
    await inbox.nothing_within(0.3)
    await depth_is(broker, queue, 0)


@pytest.mark.rabbitmq
async def test_a_retry_for_a_queue_nobody_bound_is_kept_in_unrouted(rabbit: Harness):
    broker = rabbit.broker()
    await broker.start()
    event = make_event(1)
    await broker.schedule(rabbit.topology.subscription_queue("ghost"), event, attempt=2, delay=0)
    [message] = await rabbit.read(rabbit.topology.unrouted_queue)
    assert message.event == event


@pytest.mark.rabbitmq
async def test_consumer_survives_a_dropped_connection(rabbit: Harness, proxy: TCPProxy):
    await proxy.start()
    queue = rabbit.sub("crm")
    broker = rabbit.broker(proxy.url)
    await broker.start([Binding(queue, ("#",))])
    inbox = Inbox()
    await broker.consume(queue, inbox, prefetch=4, lease=30)
    await broker.publish([make_event(1)])
    stale = await inbox.get()

    proxy.drop()  # both connections, as in a broker restart
    again = await inbox.get(timeout=10)  # re-subscribed; the unsettled one is back
    assert again.event == stale.event
    assert again.redelivered
    await broker.retry(stale, delay=0)  # its channel is gone: no copy, no error
    await broker.ack(stale)
    await broker.ack(again)

    await wait_until(broker.ready, timeout=10)
    await broker.publish([make_event(2)])
    fresh = await inbox.get(timeout=5)
    assert fresh.event.id == "evt-2"
    await broker.ack(fresh)
    await inbox.nothing_within(0.3)  # the stale retry made no copy
    await depth_is(broker, queue, 0)


@pytest.mark.rabbitmq
async def test_consume_while_down_subscribes_when_the_server_comes_up(rabbit: Harness, proxy: TCPProxy):
    queue = rabbit.sub("crm")
    broker = rabbit.broker(proxy.url, start_timeout=0.5)  # nothing listens on the proxy yet
    await broker.start([Binding(queue, ("#",))])
    inbox = Inbox()
    consumer = await broker.consume(queue, inbox, prefetch=4, lease=30)

    await proxy.start()
    await wait_until(broker.ready, timeout=10)
    await broker.publish([make_event(1)])
    lease = await inbox.get(timeout=10)
    await broker.ack(lease)
    await consumer.cancel()


@pytest.mark.rabbitmq
async def test_cancel_then_close_leaves_no_consumer_behind(rabbit: Harness):
    queue = rabbit.sub("crm")
    broker = rabbit.broker()
    await broker.start([Binding(queue, ("#",))])
    handled: list[Lease] = []

    async def handler(lease: Lease) -> None:
        handled.append(lease)
        await broker.ack(lease)

    consumer = await broker.consume(queue, handler, prefetch=4, lease=30)
    await consumer.cancel()
    await consumer.cancel()  # idempotent
    await broker.publish([make_event(1)])
    await asyncio.sleep(0.3)
    assert handled == []
    assert len(await rabbit.read(queue)) == 1


def publish_raw(url: str, queue: str, messages: list[tuple[dict[str, object], bytes]]) -> None:
    """Messages hookhub never wrote, straight into `queue` (default exchange)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for headers, body in messages:
            channel.basic_publish("", queue, body, pika.BasicProperties(headers=headers, delivery_mode=2))
    finally:
        connection.close()


def dead_messages(url: str, queue: str) -> list[tuple[dict[str, object], bytes]]:
    """Drain `queue` keeping every header (the harness reader keeps only the ce- ones)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    out: list[tuple[dict[str, object], bytes]] = []
    try:
        channel = connection.channel()
        while True:
            method, props, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return out
            out.append((dict(props.headers or {}), body))
    finally:
        connection.close()


@pytest.mark.rabbitmq
async def test_poison_messages_go_to_the_dead_queue_once_and_never_to_the_handler(rabbit: Harness, caplog):
    queue = rabbit.sub("crm")
    dead = rabbit.topology.dead_queue
    rabbit.queues.add(dead)
    broker = rabbit.broker()
    await broker.start([Binding(queue, ("#",))])
    good = message_headers(make_event(1))
    poison = [
        ({"ce-source": "/s", "ce-type": "t", "x-custom": "kept"}, b"no id"),
        ({**good, "ce-id": 42}, b"id is not a string"),
        ({**good, "ce-subject": b"\xff\xfe"}, b"not UTF-8"),
    ]
    await asyncio.to_thread(publish_raw, rabbit.url, queue, [*poison, (good, b"{}")])
    inbox = Inbox()
    with caplog.at_level(logging.WARNING):
        consumer = await broker.consume(queue, inbox, prefetch=8, lease=30)
        lease = await inbox.get()
        assert lease.event.id == "evt-1"  # the valid one behind them still comes through
        await broker.ack(lease)
        await wait_until(lambda: _true(getattr(consumer, "poisoned", 0) == 3))
    await inbox.nothing_within(0.3)
    await depth_is(broker, queue, 0)  # acked after the move: nothing loops back

    moved = await asyncio.to_thread(dead_messages, rabbit.url, dead)
    assert sorted(body for _, body in moved) == sorted(body for _, body in poison)
    for headers, body in moved:
        original = next(h for h, b in poison if b == body)
        assert headers[FROM_QUEUE_HEADER] == queue
        assert headers[DEAD_REASON_HEADER]
        assert {k: v for k, v in headers.items() if k in original} == original
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and dead in r.getMessage()]
    assert len(warnings) == 3 and all(queue in r.getMessage() for r in warnings)
    await consumer.cancel()


@pytest.mark.rabbitmq
async def test_cancel_grace_then_leftover_leases_are_released_and_their_settles_are_no_ops(rabbit: Harness):
    queue = rabbit.sub("crm")
    broker = rabbit.broker()
    await broker.start([Binding(queue, ("#",))])
    leases: list[Lease] = []
    cancelled = asyncio.Event()

    async def stuck(lease: Lease) -> None:
        leases.append(lease)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    consumer = await broker.consume(queue, stuck, prefetch=4, lease=30)
    await broker.publish([make_event(1)])
    await wait_until(lambda: _true(len(leases) == 1))

    started = time.monotonic()
    await consumer.cancel(grace=0.3)
    assert 0.3 <= time.monotonic() - started < 3
    assert cancelled.is_set()  # the handler task was stopped
    await broker.ack(leases[0])  # too late: a no-op, the message is back in the queue
    await broker.retry(leases[0], delay=0)  # no copy either

    again = Inbox()
    await broker.consume(queue, again, prefetch=4, lease=30)
    back = await again.get()
    assert back.event.id == "evt-1" and back.redelivered
    await broker.ack(back)
    await again.nothing_within(0.3)
    await depth_is(broker, queue, 0)


async def _true(value: bool) -> bool:
    return value
