"""The Broker contract, run against the in-memory, SQLite and RabbitMQ brokers alike.

What ingest relies on: a confirmed publish is in every matching durable queue with the event's
attributes as headers and its data untouched; an unmatched event is kept in the unrouted queue;
a broker that is down makes publish fail fast instead of hanging a request; the bindings given
to `start` are the complete set, and a removed subscription's messages are kept.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from hookhub.broker import Binding, BrokerUnavailable, message_headers
from hookhub.events import Event

from ._support import Harness


def make_event(i: int = 0, type_: str = "com.test.thing.created", **kwargs) -> Event:
    kwargs.setdefault("datacontenttype", "application/json")
    return Event(id=f"evt-{i}", source="/providers/test", type=type_, data=b'{"n": %d}' % i, **kwargs)


async def test_publish_one_event_lands_with_headers_body_and_content_type(harness: Harness):
    queue = harness.sub("crm")
    broker = harness.broker()
    await broker.start([Binding(queue, ("com.test.#",))])
    event = Event(
        id="evt_1",
        source="/providers/stripe",
        type="com.test.invoice.paid",
        data='{"amount": 10, "name": "Zoë ✓"}'.encode(),
        datacontenttype="application/json; charset=utf-8",
        correlationid="corr-42",
        subject="in_123",
        extensions={"tenant": "acme"},
    )

    await broker.publish([event])

    [message] = await harness.read(queue)
    assert message.routing_key == "com.test.invoice.paid"
    assert message.headers == message_headers(event)
    assert message.body == event.data
    assert message.content_type == "application/json; charset=utf-8"
    assert message.message_id == "evt_1"
    assert message.delivery_mode == 2
    assert message.event == event
    assert await harness.read(harness.topology.unrouted_queue) == []


async def test_event_without_content_type_or_body(harness: Harness):
    queue = harness.sub("crm")
    broker = harness.broker()
    await broker.start([Binding(queue, ("#",))])
    event = Event(id="e", source="/s", type="com.test.empty", data=b"")

    await broker.publish([event])

    [message] = await harness.read(queue)
    assert message.event == event
    assert message.body == b""
    assert message.content_type is None


async def test_large_body_arrives_intact(harness: Harness):
    """Bigger than RabbitMQ's frame_max (128 KiB): the body is split into frames and rejoined."""
    queue = harness.sub("crm")
    broker = harness.broker()
    await broker.start([Binding(queue, ("#",))])
    body = bytes(range(256)) * 1200  # 300 KiB, every byte value
    event = Event(
        id="big", source="/s", type="com.test.big", data=body, datacontenttype="application/octet-stream"
    )

    await broker.publish([event])

    [message] = await harness.read(queue)
    assert message.body == body
    assert message.event == event


async def test_many_concurrent_publishes_all_land_in_order(harness: Harness):
    queue = harness.sub("crm")
    broker = harness.broker()
    await broker.start([Binding(queue, ("com.test.*.created",))])
    events = [make_event(i) for i in range(2000)]

    await asyncio.gather(*(broker.publish([e]) for e in events))

    messages = await harness.read(queue)
    assert [m.message_id for m in messages] == [e.id for e in events]
    assert [m.event for m in messages[:3]] == events[:3]


async def test_one_publish_of_a_batch(harness: Harness):
    queue = harness.sub("crm")
    broker = harness.broker()
    await broker.start([Binding(queue, ("com.test.#",))])
    events = [make_event(i) for i in range(500)]

    await broker.publish(events)
    await broker.publish([])  # nothing to do, nothing sent

    messages = await harness.read(queue)
    assert [m.event for m in messages] == events


ROUTING = {
    # event type: the subscriptions that must get it (none: the unrouted queue)
    "com.stripe.invoice": {"stripe_one", "stripe_all"},
    "com.stripe.invoice.paid": {"stripe_all", "paid", "hash_mid"},
    "com.stripe": {"stripe_all"},  # '#' matches zero words
    "com.github.push": {"paid"},
    "com.github.invoice.paid": {"paid", "hash_mid"},  # matches both of paid's patterns: one copy
    "com.paid": {"hash_mid"},
    "com.shopify.orders.create": {"exact", "anything"},
    "com.shopify.orders.create.v2": set(),
    "comXstripe.invoice": set(),  # '.' in a pattern is a word separator, not a regex wildcard
    "org.example.thing": set(),
}
BINDINGS = {
    "stripe_one": ("com.stripe.*",),
    "stripe_all": ("com.stripe.#",),
    "paid": ("*.*.invoice.paid", "com.github.#"),
    "hash_mid": ("com.#.paid",),
    "exact": ("com.shopify.orders.create",),
    "anything": ("*.shopify.#.create",),
}


async def test_topic_routing_copies_to_every_matching_subscription(harness: Harness):
    broker = harness.broker()
    await broker.start([Binding(harness.sub(name), patterns) for name, patterns in BINDINGS.items()])
    events = [make_event(i, type_) for i, type_ in enumerate(ROUTING)]

    await broker.publish(events)

    for name in BINDINGS:
        got = {m.routing_key for m in await harness.read(harness.sub(name))}
        assert got == {t for t, subs in ROUTING.items() if name in subs}, name
    unrouted = {m.routing_key for m in await harness.read(harness.topology.unrouted_queue)}
    assert unrouted == {t for t, subs in ROUTING.items() if not subs}


async def test_same_pattern_on_two_subscriptions_gives_each_a_copy(harness: Harness):
    a, b = harness.sub("a"), harness.sub("b")
    broker = harness.broker()
    await broker.start([Binding(a, ("com.test.#",)), Binding(b, ("com.test.#", "com.test.#"))])

    await broker.publish([make_event(1)])

    assert [m.message_id for m in await harness.read(a)] == ["evt-1"]
    assert [m.message_id for m in await harness.read(b)] == ["evt-1"]  # a repeated pattern: one copy


async def test_unmatched_event_goes_to_unrouted_queue(harness: Harness):
    queue = harness.sub("crm")
    broker = harness.broker()
    await broker.start([Binding(queue, ("com.other.#",))])
    event = make_event(7, "com.nobody.listens")

    await broker.publish([event])

    assert await harness.read(queue) == []
    [message] = await harness.read(harness.topology.unrouted_queue)
    assert message.event == event


async def test_no_bindings_at_all_still_keeps_every_event(harness: Harness):
    broker = harness.broker()
    await broker.start()

    await broker.publish([make_event(i) for i in range(3)])

    assert len(await harness.read(harness.topology.unrouted_queue)) == 3


async def test_broker_down_start_does_not_raise_and_publish_fails_fast(harness: Harness):
    broker = harness.broker(harness.unreachable_url)
    started = time.monotonic()
    await broker.start([Binding(harness.sub("crm"), ("#",))])
    assert time.monotonic() - started < 3
    assert await broker.ready() is False

    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        await broker.publish([make_event()], timeout=5)
    assert time.monotonic() - started < 1
    with pytest.raises(BrokerUnavailable):
        await broker.queue_depths()
    await broker.close()


async def test_ready_and_publish_after_close(harness: Harness):
    broker = harness.broker()
    assert await broker.ready() is False  # not started
    with pytest.raises(BrokerUnavailable):
        await broker.publish([make_event()])
    await broker.start()
    assert await broker.ready() is True

    await broker.close()

    assert await broker.ready() is False
    with pytest.raises(BrokerUnavailable):
        await broker.publish([make_event()])


async def test_close_waits_for_in_flight_publishes(harness: Harness):
    queue = harness.sub("crm")
    broker = harness.broker()
    await broker.start([Binding(queue, ("#",))])
    events = [make_event(i) for i in range(300)]
    tasks = [asyncio.create_task(broker.publish([e])) for e in events]
    await asyncio.sleep(0)  # every publish is sent, none confirmed yet

    await broker.close()

    await asyncio.gather(*tasks)  # all confirmed, none failed
    assert len(await harness.read(queue)) == 300


async def test_queue_depths_count_waiting_messages(harness: Harness):
    a, b = harness.sub("a"), harness.sub("b")
    broker = harness.broker()
    await broker.start([Binding(a, ("com.test.#",)), Binding(b, ("com.other.#",))])
    await broker.publish([make_event(i) for i in range(3)] + [make_event(9, "org.unmatched")])

    expected = {a: 3, b: 0, harness.topology.unrouted_queue: 1}
    got: dict[str, int | None] = {}
    for _ in range(50):  # RabbitMQ's counters may trail a confirm by a moment
        depths = await broker.queue_depths()
        got = {queue: depths.get(queue) for queue in expected}
        if got == expected:
            break
        await asyncio.sleep(0.1)
    assert got == expected
    assert depths.get(harness.topology.dead_queue, 0) == 0


async def test_restart_with_same_topology_is_idempotent(harness: Harness):
    """A second replica (or a restart) declares the same topology without error or duplicates."""
    queue = harness.sub("crm")
    bindings = [Binding(queue, ("com.test.#",))]
    first, second = harness.broker(), harness.broker()
    await first.start(bindings)
    await second.start(bindings)
    assert await second.ready()

    await second.publish([make_event(1)])
    await first.publish([make_event(2)])

    assert [m.message_id for m in await harness.read(queue)] == ["evt-1", "evt-2"]


async def test_the_longest_type_an_event_allows_is_routed_and_stored(harness: Harness):
    """255 bytes: the most `Event` accepts, and the most an AMQP routing key can carry."""
    queue = harness.sub("crm")
    broker = harness.broker()
    await broker.start([Binding(queue, ("com.#",))])
    longest = make_event(1, "com." + "x" * 251)

    await broker.publish([longest])

    [message] = await harness.read(queue)
    assert message.routing_key == longest.type
    assert message.event == longest


async def test_changed_types_unbind_the_old_patterns(harness: Harness):
    """A subscription's `types` changed between two starts: the old pattern no longer routes."""
    queue = harness.sub("crm")
    before = harness.broker()
    await before.start([Binding(queue, ("com.test.old.#", "com.test.both.#"))])
    await before.close()

    after = harness.broker()
    await after.start([Binding(queue, ("com.test.new.#", "com.test.both.#"))])
    await after.publish(
        [make_event(1, "com.test.old.x"), make_event(2, "com.test.new.x"), make_event(3, "com.test.both.x")]
    )

    assert [m.message_id for m in await harness.read(queue)] == ["evt-2", "evt-3"]
    assert [m.message_id for m in await harness.read(harness.topology.unrouted_queue)] == ["evt-1"]


async def test_start_again_on_the_same_broker_replaces_the_bindings(harness: Harness):
    queue = harness.sub("crm")
    broker = harness.broker()
    await broker.start([Binding(queue, ("com.test.old.#",))])
    await broker.start([Binding(queue, ("com.test.new.#",))])

    await broker.publish([make_event(1, "com.test.old.x"), make_event(2, "com.test.new.x")])

    assert [m.message_id for m in await harness.read(queue)] == ["evt-2"]
    assert [m.message_id for m in await harness.read(harness.topology.unrouted_queue)] == ["evt-1"]


async def test_a_removed_subscription_keeps_its_messages_and_is_reported(harness: Harness, caplog):
    kept, gone = harness.sub("kept"), harness.sub("gone")
    before = harness.broker()
    await before.start([Binding(kept, ("com.test.#",)), Binding(gone, ("com.test.#",))])
    await before.publish([make_event(i) for i in range(3)])
    await before.close()
    caplog.clear()

    after = harness.broker()
    with caplog.at_level(logging.WARNING):
        await after.start([Binding(kept, ("com.test.#",))])
    await after.publish([make_event(9)])

    warnings = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and gone in r.getMessage()
    ]
    assert len(warnings) == 1 and "3 messages" in warnings[0], warnings
    assert not any(kept in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert [m.message_id for m in await harness.read(gone)] == ["evt-0", "evt-1", "evt-2"]  # unbound, kept
    assert [m.message_id for m in await harness.read(kept)] == ["evt-0", "evt-1", "evt-2", "evt-9"]
