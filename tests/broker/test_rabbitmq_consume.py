"""RabbitMQ-only consume behaviour: delay tiers and re-parking, surviving connection loss.

Connection loss comes from a local TCP proxy that drops every connection, so these tests never
disturb other users of the shared server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from urllib.parse import urlparse

import pika
import pytest
from pika import frame, spec

from hookhub.broker import Binding, Topology, message_headers
from hookhub.broker.base import ATTEMPT_HEADER, NOT_BEFORE_HEADER, Delivery
from hookhub.broker.rabbitmq import PublishEncoder, RabbitMQBroker, delay_name, schedule_headers
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
    pick = {r: broker._tier_for(r) for r in (0.1, 0.25, 0.7, 1.0, 1.99, 2.0, 3600)}
    assert pick == {0.1: None, 0.25: 0, 0.7: 1, 1.0: 2, 1.99: 2, 2.0: 3, 3600: 3}
    assert delay_name(Topology("hookhub"), 16384) == "hookhub.delay.16384s"
    with pytest.raises(ValueError):
        RabbitMQBroker(UNREACHABLE_AMQP, Topology("unit"), delay_tiers=(0,))


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
    arrived_at, delivery = await inbox.get_timed()

    assert arrived_at - scheduled_at >= 1.6
    assert arrived_at - scheduled_at < 2.5
    assert delivery.attempt == 4
    assert getattr(consumer, "reparked", None) == 1
    await broker.ack(delivery)
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
    delivery = await inbox.get(timeout=10)
    await broker.ack(delivery)
    await consumer.cancel()


@pytest.mark.rabbitmq
async def test_cancel_then_close_leaves_no_consumer_behind(rabbit: Harness):
    queue = rabbit.sub("crm")
    broker = rabbit.broker()
    await broker.start([Binding(queue, ("#",))])
    handled: list[Delivery] = []

    async def handler(delivery: Delivery) -> None:
        handled.append(delivery)
        await broker.ack(delivery)

    consumer = await broker.consume(queue, handler, prefetch=4, lease=30)
    await consumer.cancel()
    await consumer.cancel()  # idempotent
    await broker.publish([make_event(1)])
    await asyncio.sleep(0.3)
    assert handled == []
    assert len(await rabbit.read(queue)) == 1
