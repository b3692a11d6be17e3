"""In-memory-broker-only behaviour: time is the broker's `Clock`, so a `ManualClock` drives retry
delays, not-before times and lease expiry without real sleeps; a server that goes down and up."""

from __future__ import annotations

import time

import pytest

from hookhub.broker import Binding, BrokerUnavailable, Topology
from hookhub.broker.memory import MemoryBroker, MemoryServer
from hookhub.clock import ManualClock
from hookhub.events import Event

from .test_consume import Inbox


def make_event(i: int = 0) -> Event:
    return Event(id=f"evt-{i}", source="/s", type="com.test.thing", data=b"{}")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def server() -> MemoryServer:
    return MemoryServer()


async def started(server: MemoryServer, clock: ManualClock, queue: str) -> MemoryBroker:
    broker = MemoryBroker(Topology("t"), clock, server=server)
    await broker.start([Binding(queue, ("#",))])
    return broker


QUEUE = Topology("t").subscription_queue("crm")


async def test_a_retry_an_hour_away_comes_back_when_the_clock_gets_there(server, clock):
    broker = await started(server, clock, QUEUE)
    inbox = Inbox()
    await broker.consume(QUEUE, inbox, prefetch=4, lease=30)
    await broker.publish([make_event(1)])
    first = await inbox.get()
    began = time.monotonic()

    await broker.retry(first, delay=3600)
    await clock.advance(3599)
    await inbox.nothing_within(0.05)
    await clock.advance(1)
    second = await inbox.get(timeout=1)

    assert (second.event.id, second.attempt, second.redelivered) == ("evt-1", 2, False)
    assert time.monotonic() - began < 1  # an hour of backoff, no real waiting
    await broker.close()


async def test_scheduled_events_come_in_not_before_order(server, clock):
    broker = await started(server, clock, QUEUE)
    inbox = Inbox()
    await broker.consume(QUEUE, inbox, prefetch=4, lease=30)
    await broker.schedule(QUEUE, make_event(2), attempt=3, delay=20)
    await broker.schedule(QUEUE, make_event(1), attempt=2, delay=10)

    await clock.advance(9)
    await inbox.nothing_within(0.05)
    await clock.advance(11)
    got = [await inbox.get(timeout=1) for _ in range(2)]

    assert [(lease.event.id, lease.attempt) for lease in got] == [("evt-1", 2), ("evt-2", 3)]
    await broker.close()


async def test_a_lease_is_held_across_many_lease_times_and_a_crash_gives_it_back(server, clock):
    holder = await started(server, clock, QUEUE)
    other_process = await started(server, clock, QUEUE)
    held, other = Inbox(), Inbox()
    await holder.consume(QUEUE, held, prefetch=1, lease=10)
    await holder.publish([make_event(1)])
    await held.get()
    await other_process.consume(QUEUE, other, prefetch=1, lease=10)

    for _ in range(10):  # 100 s of clock time, ten lease times
        await clock.advance(10)
    await other.nothing_within(0.05)

    for consumer in list(holder._consumers):
        await consumer._halt()
    await clock.advance(9)
    await other.nothing_within(0.05)
    await clock.advance(2)
    again = await other.get(timeout=1)
    assert (again.event.id, again.attempt, again.redelivered) == ("evt-1", 1, True)
    await other_process.close()


async def test_a_server_that_is_down_refuses_then_recovers(server, clock, caplog):
    server.down = True
    broker = MemoryBroker(Topology("t"), clock, server=server)
    await broker.start([Binding(QUEUE, ("#",))])
    assert not await broker.ready()
    with pytest.raises(BrokerUnavailable):
        await broker.publish([make_event(1)])
    with pytest.raises(BrokerUnavailable):
        await broker.queue_depths()

    server.down = False
    assert await broker.ready()
    await broker.publish([make_event(2)])  # the bindings were declared once it came up
    assert (await broker.queue_depths())[QUEUE] == 1
    await broker.close()
