"""The consume side of the Broker contract, against the embedded SQLite broker and RabbitMQ alike.

What the fan-out dispatcher relies on: a delivery stays with its consumer until settled with exactly
one of ack / retry / release; a retry comes back with the next attempt number, never before its
delay; at most `prefetch` deliveries are unsettled at once; one stalled queue never holds up
another; and whatever a consumer leaves unsettled (cancel, crash) is handed out again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from hookhub.broker import Binding, Broker
from hookhub.broker.base import Delivery
from hookhub.events import Event

from ._support import Harness


def make_event(i: int = 0, type_: str = "com.test.thing.created") -> Event:
    return Event(
        id=f"evt-{i}",
        source="/providers/test",
        type=type_,
        data=b'{"n": %d}' % i,
        datacontenttype="application/json",
        correlationid=f"corr-{i}",
        extensions={"tenant": "acme"},
    )


class Inbox:
    """A handler that hands every delivery to the test, which settles it (the hand-off pattern a
    pull subscription uses: returning from the handler does not settle)."""

    def __init__(self) -> None:
        self.deliveries: asyncio.Queue[tuple[float, Delivery]] = asyncio.Queue()

    async def __call__(self, delivery: Delivery) -> None:
        self.deliveries.put_nowait((time.monotonic(), delivery))

    async def get(self, timeout: float = 5.0) -> Delivery:
        return (await self.get_timed(timeout))[1]

    async def get_timed(self, timeout: float = 5.0) -> tuple[float, Delivery]:
        return await asyncio.wait_for(self.deliveries.get(), timeout)

    async def nothing_within(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        assert self.deliveries.empty(), self.deliveries.get_nowait()


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


async def depth_is(broker: Broker, queue: str, expected: int, timeout: float = 5.0) -> None:
    """RabbitMQ's counters may trail an ack by a moment."""

    async def check() -> bool:
        return (await broker.queue_depths()).get(queue) == expected

    await wait_until(check, timeout)


async def started(harness: Harness, *names: str) -> tuple[Broker, list[str]]:
    queues = [harness.sub(name) for name in names]
    broker = harness.broker()
    await broker.start([Binding(q, (f"com.{name}.#",)) for q, name in zip(queues, names, strict=True)])
    return broker, queues


async def test_publish_consume_ack_removes_the_message(harness: Harness):
    broker, [queue] = await started(harness, "crm")
    inbox = Inbox()
    await broker.consume(queue, inbox, prefetch=4, lease=30)
    event = make_event(1, "com.crm.invoice.paid")

    await broker.publish([event])
    delivery = await inbox.get()

    assert delivery.event == event  # headers and body rebuild the same CloudEvent
    assert (delivery.queue, delivery.attempt, delivery.redelivered) == (queue, 1, False)
    await broker.ack(delivery)
    await depth_is(broker, queue, 0)
    await broker.ack(delivery)  # a second settle is a harmless no-op
    await broker.release(delivery)
    await inbox.nothing_within(0.3)


async def test_retry_comes_back_after_the_delay_with_the_next_attempt(harness: Harness):
    broker, [queue] = await started(harness, "crm")
    inbox = Inbox()
    await broker.consume(queue, inbox, prefetch=4, lease=30)
    event = make_event(2, "com.crm.x")
    await broker.publish([event])
    first = await inbox.get()

    retried_at = time.monotonic()
    await broker.retry(first, delay=1.2)
    arrived_at, second = await inbox.get_timed(timeout=5)

    assert arrived_at - retried_at >= 1.2, "handed out before its delay"
    assert arrived_at - retried_at < 2.5, "far later than its delay"
    assert second.event == event
    assert (second.attempt, second.redelivered) == (2, False)
    await broker.retry(second, delay=0)  # attempt 3, due at once
    third = await inbox.get()
    assert third.attempt == 3
    await broker.ack(third)
    await depth_is(broker, queue, 0)  # the originals are gone: one copy at a time
    await inbox.nothing_within(0.3)


async def test_release_hands_it_out_again_now_with_the_same_attempt(harness: Harness):
    broker, [queue] = await started(harness, "crm")
    inbox = Inbox()
    await broker.consume(queue, inbox, prefetch=4, lease=30)
    await broker.publish([make_event(3, "com.crm.x")])
    first = await inbox.get()

    released_at = time.monotonic()
    await broker.release(first)
    arrived_at, again = await inbox.get_timed()

    assert arrived_at - released_at < 1.0
    assert again.event == first.event
    assert (again.attempt, again.redelivered) == (1, True)
    await broker.ack(again)
    await depth_is(broker, queue, 0)


async def test_schedule_enqueues_into_a_queue_with_a_delay_and_an_attempt(harness: Harness):
    broker, [queue] = await started(harness, "crm")
    inbox = Inbox()
    await broker.consume(queue, inbox, prefetch=4, lease=30)
    later, now = make_event(4), make_event(5)

    scheduled_at = time.monotonic()
    await broker.schedule(queue, later, attempt=3, delay=0.6)
    await broker.schedule(queue, now, attempt=2, delay=0)

    first_at, first = await inbox.get_timed()
    second_at, second = await inbox.get_timed()
    assert (first.event, first.attempt) == (now, 2)
    assert first_at - scheduled_at < 0.5
    assert (second.event, second.attempt) == (later, 3)
    assert second_at - scheduled_at >= 0.6
    for delivery in (first, second):
        await broker.ack(delivery)
    await depth_is(broker, queue, 0)


async def test_never_more_than_prefetch_unsettled(harness: Harness):
    broker, [queue] = await started(harness, "crm")
    gate = asyncio.Event()
    active = peak = done = 0

    async def handler(delivery: Delivery) -> None:
        nonlocal active, peak, done
        active += 1
        peak = max(peak, active)
        await gate.wait()
        await asyncio.sleep(0.01)
        active -= 1
        await broker.ack(delivery)
        done += 1

    await broker.publish([make_event(i, "com.crm.x") for i in range(12)])
    await broker.consume(queue, handler, prefetch=3, lease=30)

    await asyncio.sleep(0.5)  # the handlers block: only three may have been handed out
    assert (active, peak, done) == (3, 3, 0)
    gate.set()

    async def all_done() -> bool:
        return done == 12

    await wait_until(all_done)
    assert peak == 3
    await depth_is(broker, queue, 0)


async def test_a_stalled_queue_does_not_delay_another(harness: Harness):
    broker, [slow_queue, fast_queue] = await started(harness, "slow", "fast")
    stalled = asyncio.Event()

    async def stall(delivery: Delivery) -> None:
        stalled.set()
        await asyncio.Event().wait()  # never settles

    fast = Inbox()

    async def ack_fast(delivery: Delivery) -> None:
        await fast(delivery)
        await broker.ack(delivery)

    await broker.consume(slow_queue, stall, prefetch=1, lease=30)
    await broker.consume(fast_queue, ack_fast, prefetch=1, lease=30)
    await broker.publish([make_event(i, "com.slow.x") for i in range(5)])
    await asyncio.wait_for(stalled.wait(), 5)

    published_at = time.monotonic()
    await broker.publish([make_event(100 + i, "com.fast.x") for i in range(5)])
    arrivals = [await fast.get_timed() for _ in range(5)]

    assert sorted(d.event.id for _, d in arrivals) == [f"evt-{100 + i}" for i in range(5)]
    assert arrivals[-1][0] - published_at < 1.0
    await depth_is(broker, fast_queue, 0)


async def test_cancel_puts_unsettled_deliveries_back(harness: Harness):
    broker, [queue] = await started(harness, "crm")
    held = Inbox()
    consumer = await broker.consume(queue, held, prefetch=2, lease=30)
    await broker.publish([make_event(i, "com.crm.x") for i in range(3)])
    first, second = await held.get(), await held.get()

    await consumer.cancel()
    await held.nothing_within(0.3)  # nothing new after cancel
    await broker.ack(first)  # too late: a no-op, the message is back in the queue

    again = Inbox()
    await broker.consume(queue, again, prefetch=10, lease=30)
    got = {d.event.id: d for d in [await again.get() for _ in range(3)]}
    assert set(got) == {"evt-0", "evt-1", "evt-2"}
    assert got[first.event.id].redelivered and got[second.event.id].redelivered
    assert all(d.attempt == 1 for d in got.values())
    for delivery in got.values():
        await broker.ack(delivery)
    await depth_is(broker, queue, 0)


async def test_cancel_with_grace_lets_running_handlers_settle(harness: Harness):
    broker, [queue] = await started(harness, "crm")
    began = asyncio.Event()

    async def slow_ack(delivery: Delivery) -> None:
        began.set()
        await asyncio.sleep(0.3)
        await broker.ack(delivery)

    consumer = await broker.consume(queue, slow_ack, prefetch=4, lease=30)
    await broker.publish([make_event(1, "com.crm.x")])
    await asyncio.wait_for(began.wait(), 5)

    await consumer.cancel(grace=5)

    await depth_is(broker, queue, 0)  # acked, not put back: no duplicate on a graceful stop
    again = Inbox()
    await broker.consume(queue, again, prefetch=4, lease=30)
    await again.nothing_within(0.3)


async def test_a_handler_that_raises_gets_its_delivery_released(harness: Harness, caplog):
    broker, [queue] = await started(harness, "crm")
    seen: list[Delivery] = []

    async def flaky(delivery: Delivery) -> None:
        seen.append(delivery)
        if len(seen) == 1:
            raise RuntimeError("boom")
        await broker.ack(delivery)

    await broker.consume(queue, flaky, prefetch=1, lease=30)
    await broker.publish([make_event(1, "com.crm.x")])

    async def twice() -> bool:
        return len(seen) >= 2

    await wait_until(twice)
    assert (seen[1].attempt, seen[1].redelivered) == (1, True)
    assert "boom" in caplog.text
    await depth_is(broker, queue, 0)


async def test_unsettled_deliveries_of_a_closed_broker_come_back(harness: Harness):
    """Crash-like: the broker goes away with a delivery unsettled (RabbitMQ: its connection closes;
    SQLite: its lease is given up); a consumer elsewhere gets it, marked redelivered."""
    crashed, [queue] = await started(harness, "crm")
    held = Inbox()
    await crashed.consume(queue, held, prefetch=1, lease=0.5)
    await crashed.publish([make_event(1, "com.crm.x")])
    lost = await held.get()

    await crashed.close()

    survivor = harness.broker()
    await survivor.start([Binding(queue, ("com.crm.#",))])
    inbox = Inbox()
    await survivor.consume(queue, inbox, prefetch=1, lease=30)
    again = await inbox.get(timeout=5)
    assert again.event == lost.event
    assert (again.attempt, again.redelivered) == (1, True)
    await survivor.ack(again)
    await depth_is(survivor, queue, 0)


async def test_settling_a_delivery_of_another_broker_kind_is_refused(harness: Harness):
    broker, [queue] = await started(harness, "crm")
    foreign = Delivery(make_event(1), queue, 1, False, receipt=object())
    with pytest.raises(TypeError):
        await broker.ack(foreign)


async def test_consume_argument_checks(harness: Harness):
    broker, [queue] = await started(harness, "crm")
    with pytest.raises(ValueError):
        await broker.consume(queue, Inbox(), prefetch=0, lease=30)
    with pytest.raises(ValueError):
        await broker.schedule(queue, make_event(1), attempt=0, delay=0)
