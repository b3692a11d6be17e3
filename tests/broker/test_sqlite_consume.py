"""Embedded-broker-only consume behaviour: leases as visibility timeouts, a real crash, wake-ups
and polling across processes, retries as one atomic update."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
import textwrap
import time
from collections.abc import AsyncIterator

import pytest

from hookhub.broker import Binding, Topology
from hookhub.broker import sqlite as sqlite_broker
from hookhub.broker.sqlite import MESSAGES_TABLE, SQLiteBroker, sqlite_path
from hookhub.events import Event

from .test_consume import Inbox, depth_is


def make_event(i: int = 0) -> Event:
    return Event(
        id=f"evt-{i}", source="/s", type="com.test.thing", data=b"{}", datacontenttype="application/json"
    )


@pytest.fixture
def topology(namespace: str) -> Topology:
    return Topology(namespace)


@pytest.fixture
async def brokers(tmp_sqlite_url: str, topology: Topology) -> AsyncIterator[list[SQLiteBroker]]:
    """Brokers on one file: each object stands for one process (no shared wake-ups)."""
    made: list[SQLiteBroker] = []
    yield made
    for broker in made:
        await broker.close()


async def open_broker(url: str, topology: Topology, made: list[SQLiteBroker]) -> SQLiteBroker:
    broker = SQLiteBroker(url, topology)
    await broker.start([Binding(topology.subscription_queue("crm"), ("#",))])
    made.append(broker)
    return broker


def rows(url: str) -> list[tuple[float, int, float | None]]:
    conn = sqlite3.connect(sqlite_path(url))
    try:
        return conn.execute(f"SELECT available_at, attempts, lease_until FROM {MESSAGES_TABLE}").fetchall()
    finally:
        conn.close()


CRASHING_CONSUMER = textwrap.dedent(
    """
    import asyncio, sys
    from hookhub.broker import Binding, Topology
    from hookhub.broker.sqlite import SQLiteBroker

    async def main(url, namespace):
        topology = Topology(namespace)
        queue = topology.subscription_queue("crm")
        broker = SQLiteBroker(url, topology)
        await broker.start([Binding(queue, ("#",))])

        async def handler(delivery):
            print("got", delivery.event.id, flush=True)
            await asyncio.Event().wait()  # never settles

        await broker.consume(queue, handler, prefetch=1, lease=0.5)
        await asyncio.Event().wait()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_a_killed_consumers_lease_expires_and_the_message_comes_back(
    tmp_sqlite_url: str, topology: Topology, brokers: list[SQLiteBroker]
):
    broker = await open_broker(tmp_sqlite_url, topology, brokers)
    await broker.publish([make_event(1)])
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHING_CONSUMER,
        tmp_sqlite_url,
        topology.namespace,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 15)
        assert line.strip() == b"got evt-1"
    finally:
        child.send_signal(signal.SIGKILL)  # no cleanup of any kind: its lease stays in the file
        await child.wait()
    [(_available_at, _attempts, lease_until)] = rows(tmp_sqlite_url)
    assert lease_until is not None

    inbox = Inbox()
    await broker.consume(topology.subscription_queue("crm"), inbox, prefetch=1, lease=30)
    delivery = await inbox.get(timeout=5)
    assert time.time() >= lease_until
    assert (delivery.event.id, delivery.attempt, delivery.redelivered) == ("evt-1", 1, True)
    await broker.ack(delivery)
    assert rows(tmp_sqlite_url) == []


async def test_a_slow_handler_loses_its_expired_lease_to_another_consumer(
    tmp_sqlite_url: str, topology: Topology, brokers: list[SQLiteBroker]
):
    queue = topology.subscription_queue("crm")
    slow_side = await open_broker(tmp_sqlite_url, topology, brokers)
    other_side = await open_broker(tmp_sqlite_url, topology, brokers)
    slow, other = Inbox(), Inbox()
    await slow_side.consume(queue, slow, prefetch=1, lease=0.3)
    await slow_side.publish([make_event(1)])
    late = await slow.get()

    await other_side.consume(queue, other, prefetch=1, lease=30)
    taken = await other.get(timeout=3)
    assert taken.redelivered

    await slow_side.retry(late, delay=60)  # not its lease any more: no effect
    [(available_at, attempts, _lease)] = rows(tmp_sqlite_url)
    assert attempts == 0 and available_at > time.time() + 20  # still other_side's 30 s lease
    await other_side.ack(taken)
    assert rows(tmp_sqlite_url) == []


async def test_retry_is_one_atomic_update(
    tmp_sqlite_url: str, topology: Topology, brokers: list[SQLiteBroker]
):
    broker = await open_broker(tmp_sqlite_url, topology, brokers)
    inbox = Inbox()
    await broker.consume(topology.subscription_queue("crm"), inbox, prefetch=1, lease=30)
    await broker.publish([make_event(1)])
    delivery = await inbox.get()

    before = time.time()
    await broker.retry(delivery, delay=30)

    [(available_at, attempts, lease_until)] = rows(tmp_sqlite_url)  # the same row, not a copy
    assert before + 30 <= available_at <= time.time() + 30
    assert (attempts, lease_until) == (1, None)


async def test_own_writes_wake_the_consumer_without_polling(
    tmp_sqlite_url: str, topology: Topology, brokers: list[SQLiteBroker], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(sqlite_broker, "POLL_MIN", 30.0)  # polling alone would take 30 s
    monkeypatch.setattr(sqlite_broker, "POLL_MAX", 30.0)
    broker = await open_broker(tmp_sqlite_url, topology, brokers)
    inbox = Inbox()
    queue = topology.subscription_queue("crm")
    await broker.consume(queue, inbox, prefetch=4, lease=30)
    await asyncio.sleep(0.1)  # the consumer found nothing and sleeps

    await broker.publish([make_event(1)])
    first = await inbox.get(timeout=2)
    await broker.release(first)  # a release is a write into the queue too
    again = await inbox.get(timeout=2)
    await broker.schedule(queue, make_event(2), attempt=2, delay=0.3)  # sleeps until due, not 30 s
    scheduled = await inbox.get(timeout=2)
    assert (again.redelivered, scheduled.attempt) == (True, 2)


async def test_writes_of_another_process_are_found_by_polling(
    tmp_sqlite_url: str, topology: Topology, brokers: list[SQLiteBroker]
):
    consumer_side = await open_broker(tmp_sqlite_url, topology, brokers)
    producer_side = await open_broker(tmp_sqlite_url, topology, brokers)
    inbox = Inbox()
    await consumer_side.consume(topology.subscription_queue("crm"), inbox, prefetch=4, lease=30)
    await asyncio.sleep(1.0)  # idle long enough to back off to the slowest poll

    published_at = time.monotonic()
    await producer_side.publish([make_event(1)])
    arrived_at, delivery = await inbox.get_timed(timeout=3)
    assert arrived_at - published_at < sqlite_broker.POLL_MAX + 0.3
    await consumer_side.ack(delivery)


async def test_only_batches_that_store_messages_pay_for_an_fsync(
    tmp_sqlite_url: str, topology: Topology, brokers: list[SQLiteBroker]
):
    broker = await open_broker(tmp_sqlite_url, topology, brokers)
    queue = topology.subscription_queue("crm")
    inbox = Inbox()
    await broker.consume(queue, inbox, prefetch=4, lease=30)
    await broker.publish([make_event(1)])
    await broker.ack(await inbox.get())
    await depth_is(broker, queue, 0)
    assert broker._conn is not None

    def synchronous() -> int:
        assert broker._conn is not None
        return int(broker._conn.execute("PRAGMA synchronous").fetchone()[0])

    await asyncio.sleep(0.3)  # the idle consumer's lease polls are settle-only batches too
    assert synchronous() == 1  # NORMAL
    await broker.publish([make_event(2)])
    assert synchronous() == 2  # FULL again for anything that stores a message
