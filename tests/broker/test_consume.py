"""The consume side of the Broker contract, against the in-memory, SQLite and RabbitMQ brokers alike.

What the fan-out dispatcher relies on: a lease stays with its consumer until settled with exactly
one of ack / retry / release, however long that takes; a retry comes back with the next attempt
number, never before its delay; at most `prefetch` leases are unsettled at once; one stalled queue
never holds up another; whatever a consumer leaves unsettled (cancel, crash) is handed out again;
and a message that is not an event goes to the dead queue, never to a handler.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from hookhub.broker import Binding, Broker
from hookhub.broker.base import Lease
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
    """A handler that hands every lease to the test, which settles it (the hand-off pattern a
    pull subscription uses: returning from the handler does not settle)."""

    def __init__(self) -> None:
        self.leases: asyncio.Queue[tuple[float, Lease]] = asyncio.Queue()

    async def __call__(self, lease: Lease) -> None:
        self.leases.put_nowait((time.monotonic(), lease))

    async def get(self, timeout: float = 5.0) -> Lease:
        return (await self.get_timed(timeout))[1]

    async def get_timed(self, timeout: float = 5.0) -> tuple[float, Lease]:
        return await asyncio.wait_for(self.leases.get(), timeout)

    async def nothing_within(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        assert self.leases.empty(), self.leases.get_nowait()


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
    lease = await inbox.get()

    assert lease.event == event  # headers and body rebuild the same CloudEvent
    assert (lease.queue, lease.attempt, lease.redelivered) == (queue, 1, False)
    await broker.ack(lease)
    await depth_is(broker, queue, 0)
    await broker.ack(lease)  # a second settle is a harmless no-op
    await broker.release(lease)
    await inbox.nothing_within(0.3)


async def test_ack_many_removes_every_message_of_the_batch_and_only_those(harness: Harness):
    broker, [queue] = await started(harness, "crm")
    inbox = Inbox()
    await broker.consume(queue, inbox, prefetch=10, lease=30)
    await broker.publish([make_event(n, "com.crm.x") for n in range(6)])
    leases = [await inbox.get() for _ in range(6)]

    await broker.ack(leases[0])
    await broker.ack_many(leases[:4])  # one settled already: a no-op for it
    await broker.release(leases[4])  # comes back: not part of the batch
    back = await inbox.get()
    assert back.event == leases[4].event
    await broker.ack_many([back, leases[5]])
    await depth_is(broker, queue, 0)
    await broker.ack_many(leases)  # all settled: nothing happens
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
    for lease in (first, second):
        await broker.ack(lease)
    await depth_is(broker, queue, 0)


async def test_never_more_than_prefetch_unsettled(harness: Harness):
    broker, [queue] = await started(harness, "crm")
    gate = asyncio.Event()
    active = peak = done = 0

    async def handler(lease: Lease) -> None:
        nonlocal active, peak, done
        active += 1
        peak = max(peak, active)
        await gate.wait()
        await asyncio.sleep(0.01)
        active -= 1
        await broker.ack(lease)
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

    async def stall(lease: Lease) -> None:
        stalled.set()
        await asyncio.Event().wait()  # never settles

    fast = Inbox()

    async def ack_fast(lease: Lease) -> None:
        await fast(lease)
        await broker.ack(lease)

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
    for lease in got.values():
        await broker.ack(lease)
    await depth_is(broker, queue, 0)


async def test_cancel_with_grace_lets_running_handlers_settle(harness: Harness):
    broker, [queue] = await started(harness, "crm")
    began = asyncio.Event()

    async def slow_ack(lease: Lease) -> None:
        began.set()
        await asyncio.sleep(0.3)
        await broker.ack(lease)

    consumer = await broker.consume(queue, slow_ack, prefetch=4, lease=30)
    await broker.publish([make_event(1, "com.crm.x")])
    await asyncio.wait_for(began.wait(), 5)

    await consumer.cancel(grace=5)

    await depth_is(broker, queue, 0)  # acked, not put back: no duplicate on a graceful stop
    again = Inbox()
    await broker.consume(queue, again, prefetch=4, lease=30)
    await again.nothing_within(0.3)


async def test_a_handler_that_raises_gets_its_lease_released(harness: Harness, caplog):
    broker, [queue] = await started(harness, "crm")
    seen: list[Lease] = []

    async def flaky(lease: Lease) -> None:
        seen.append(lease)
        if len(seen) == 1:
            raise RuntimeError("boom")
        await broker.ack(lease)

    await broker.consume(queue, flaky, prefetch=1, lease=30)
    await broker.publish([make_event(1, "com.crm.x")])

    async def twice() -> bool:
        return len(seen) >= 2

    await wait_until(twice)
    assert (seen[1].attempt, seen[1].redelivered) == (1, True)
    assert "boom" in caplog.text
    await depth_is(broker, queue, 0)


async def test_unsettled_leases_of_a_closed_broker_come_back(harness: Harness):
    """`close` gives back what its consumers hold; a consumer elsewhere gets it, marked redelivered."""
    closed, [queue] = await started(harness, "crm")
    held = Inbox()
    await closed.consume(queue, held, prefetch=1, lease=30)
    await closed.publish([make_event(1, "com.crm.x")])
    lost = await held.get()

    await closed.close()

    survivor = harness.broker()
    await survivor.start([Binding(queue, ("com.crm.#",))])
    inbox = Inbox()
    await survivor.consume(queue, inbox, prefetch=1, lease=30)
    again = await inbox.get(timeout=5)
    assert again.event == lost.event
    assert (again.attempt, again.redelivered) == (1, True)
    await survivor.ack(again)
    await depth_is(survivor, queue, 0)


async def test_a_lease_held_far_longer_than_lease_is_not_handed_out_again(harness: Harness):
    """The holder waits (a rate limit, a free slot) three times `lease`: nobody else gets the
    message meanwhile, and its ack still counts."""
    holder, [queue] = await started(harness, "crm")
    held = Inbox()
    await holder.consume(queue, held, prefetch=4, lease=0.6)
    await holder.publish([make_event(i, "com.crm.x") for i in range(3)])
    leases = [await held.get() for _ in range(3)]
    other_process = harness.broker()
    await other_process.start([Binding(queue, ("com.crm.#",))])
    other = Inbox()
    await other_process.consume(queue, other, prefetch=4, lease=0.6)

    await asyncio.sleep(1.8)

    await other.nothing_within(0)
    await held.nothing_within(0)
    for lease in leases:
        await holder.ack(lease)
    await depth_is(holder, queue, 0)
    await other.nothing_within(0.7)


async def test_the_lease_of_a_dead_process_comes_back_after_lease(harness: Harness):
    """A killed process neither settles nor renews: its lease runs out and the message is handed
    out again, redelivered, same attempt (RabbitMQ: at once, when the connection closes)."""
    dying, [queue] = await started(harness, "crm")
    held = Inbox()
    await dying.consume(queue, held, prefetch=1, lease=1.0)
    survivor = harness.broker()
    await survivor.start([Binding(queue, ("com.crm.#",))])
    await dying.publish([make_event(1, "com.crm.x")])
    lost = await held.get()
    await asyncio.sleep(0.5)  # a renewal or two happened

    died_at = time.monotonic()
    await harness.crash(dying)
    inbox = Inbox()
    await survivor.consume(queue, inbox, prefetch=1, lease=30)
    arrived_at, again = await inbox.get_timed(timeout=5)

    assert again.event == lost.event
    assert (again.attempt, again.redelivered) == (1, True)
    if harness.kind != "rabbitmq":
        assert arrived_at - died_at >= 0.5, "handed out while the lease could still be held"
    assert arrived_at - died_at < 2.0
    await survivor.ack(again)
    await depth_is(survivor, queue, 0)


async def test_cancel_with_grace_cancels_a_handler_that_overruns_and_releases_its_message(harness: Harness):
    broker, [queue] = await started(harness, "crm")
    began = asyncio.Event()
    cancelled = asyncio.Event()

    async def too_slow(lease: Lease) -> None:
        began.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        await broker.ack(lease)

    consumer = await broker.consume(queue, too_slow, prefetch=4, lease=30)
    await broker.publish([make_event(1, "com.crm.x")])
    await asyncio.wait_for(began.wait(), 5)

    stopped_at = time.monotonic()
    await consumer.cancel(grace=0.3)

    assert 0.3 <= time.monotonic() - stopped_at < 2
    assert cancelled.is_set()
    again = Inbox()
    await broker.consume(queue, again, prefetch=4, lease=30)
    lease = await again.get()
    assert (lease.event.id, lease.attempt, lease.redelivered) == ("evt-1", 1, True)
    await broker.ack(lease)
    await depth_is(broker, queue, 0)


POISON: dict[str, tuple[dict[str, Any], bytes]] = {
    "missing type": ({"ce-specversion": "1.0", "ce-id": "p-1", "ce-source": "/s"}, b"{}"),
    "blank id": ({"ce-specversion": "1.0", "ce-id": "  ", "ce-source": "/s", "ce-type": "com.crm.x"}, b"{}"),
    "number source": (
        {"ce-specversion": "1.0", "ce-id": "p-3", "ce-source": 42, "ce-type": "com.crm.x"},
        b"x",
    ),
    "not utf-8": (
        {"ce-specversion": "1.0", "ce-id": "p-4", "ce-source": "/s", "ce-type": b"com.\xff\xfe"},
        b"\xff",
    ),
    "bad time": ({"ce-id": "p-5", "ce-source": "/s", "ce-type": "com.crm.x", "ce-time": "yesterday"}, b""),
}


@pytest.mark.parametrize("case", list(POISON))
async def test_a_message_that_is_not_an_event_goes_to_the_dead_queue(harness: Harness, case: str, caplog):
    headers, body = POISON[case]
    broker, [queue] = await started(harness, "crm")
    await harness.inject(queue, headers, body)
    good = make_event(1, "com.crm.x")
    await broker.publish([good])
    inbox = Inbox()

    with caplog.at_level(logging.WARNING):
        await broker.consume(queue, inbox, prefetch=4, lease=0.5)
        lease = await inbox.get()
        assert lease.event == good  # the poison one before it never reached the handler
        await broker.ack(lease)
        await depth_is(broker, queue, 0)
        await inbox.nothing_within(1.0)  # never looped back (two lease times)

    [dead] = await harness.read(harness.topology.dead_queue)
    assert (dead.headers, dead.body) == (headers, body)
    assert dead.reason
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and harness.topology.dead_queue in r.getMessage()
    ]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


async def test_settling_a_lease_of_another_broker_kind_is_refused(harness: Harness):
    broker, [queue] = await started(harness, "crm")
    foreign = Lease(make_event(1), queue, 1, False, receipt=object())
    with pytest.raises(TypeError):
        await broker.ack(foreign)


async def test_consume_argument_checks(harness: Harness):
    broker, [queue] = await started(harness, "crm")
    with pytest.raises(ValueError):
        await broker.consume(queue, Inbox(), prefetch=0, lease=30)
    with pytest.raises(ValueError):
        await broker.schedule(queue, make_event(1), attempt=0, delay=0)
