"""Embedded-broker-only consume behaviour: leases as renewed visibility timeouts, a real crash,
wake-ups and polling across processes, retries as one atomic update."""

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
from hookhub.broker.sqlite import MESSAGES_TABLE, SQLiteBroker, sqlite_path
from hookhub.broker.sqlite import consumer as sqlite_consumer
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


def rows(url: str) -> list[tuple[float, int, int | None]]:
    conn = sqlite3.connect(sqlite_path(url))
    try:
        return conn.execute(f"SELECT available_at, attempts, lease_id FROM {MESSAGES_TABLE}").fetchall()
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

        async def handler(lease):
            print("got", lease.event.id, flush=True)
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
    [(lease_end, _attempts, lease_id)] = rows(tmp_sqlite_url)
    assert lease_id is not None

    inbox = Inbox()
    await broker.consume(topology.subscription_queue("crm"), inbox, prefetch=1, lease=30)
    lease = await inbox.get(timeout=5)
    assert time.time() >= lease_end
    assert (lease.event.id, lease.attempt, lease.redelivered) == ("evt-1", 1, True)
    await broker.ack(lease)
    assert rows(tmp_sqlite_url) == []


async def test_a_held_lease_is_renewed_with_the_same_token(
    tmp_sqlite_url: str, topology: Topology, brokers: list[SQLiteBroker]
):
    broker = await open_broker(tmp_sqlite_url, topology, brokers)
    inbox = Inbox()
    await broker.consume(topology.subscription_queue("crm"), inbox, prefetch=1, lease=0.6)
    await broker.publish([make_event(1)])
    lease = await inbox.get()
    [(first_end, _, first_id)] = rows(tmp_sqlite_url)

    await asyncio.sleep(1.5)

    [(end, _, lease_id)] = rows(tmp_sqlite_url)
    assert end > first_end + 1.0 and end > time.time()  # pushed forward, still hidden
    assert lease_id == first_id  # settle calls stay valid
    await broker.retry(lease, delay=60)
    [(_, attempts, lease_id)] = rows(tmp_sqlite_url)
    assert (attempts, lease_id) == (1, None)


async def test_a_frozen_process_loses_its_lease_and_its_late_settle_changes_nothing(
    tmp_sqlite_url: str, topology: Topology, brokers: list[SQLiteBroker]
):
    queue = topology.subscription_queue("crm")
    frozen_side = await open_broker(tmp_sqlite_url, topology, brokers)
    other_side = await open_broker(tmp_sqlite_url, topology, brokers)
    frozen = Inbox()
    consumer = await frozen_side.consume(queue, frozen, prefetch=1, lease=0.3)
    await frozen_side.publish([make_event(1)])
    late = await frozen.get()
    await consumer._halt()  # type: ignore[attr-defined]  # stops renewing, as a stopped process would

    other = Inbox()
    await other_side.consume(queue, other, prefetch=1, lease=30)
    taken = await other.get(timeout=3)
    assert taken.redelivered

    await frozen_side.retry(late, delay=60)  # not its lease any more: no effect
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
    lease = await inbox.get()

    before = time.time()
    await broker.retry(lease, delay=30)

    [(available_at, attempts, lease_id)] = rows(tmp_sqlite_url)  # the same row, not a copy
    assert before + 30 <= available_at <= time.time() + 30
    assert (attempts, lease_id) == (1, None)


async def test_own_writes_wake_the_consumer_without_polling(
    tmp_sqlite_url: str, topology: Topology, brokers: list[SQLiteBroker], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(sqlite_consumer, "POLL_MIN", 30.0)  # polling alone would take 30 s
    monkeypatch.setattr(sqlite_consumer, "POLL_MAX", 30.0)
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
    arrived_at, lease = await inbox.get_timed(timeout=3)
    assert arrived_at - published_at < sqlite_consumer.POLL_MAX + 0.3
    await consumer_side.ack(lease)


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
    assert broker._writer.conn is not None

    def synchronous() -> int:
        assert broker._writer.conn is not None
        return int(broker._writer.conn.execute("PRAGMA synchronous").fetchone()[0])

    await asyncio.sleep(0.3)  # the idle consumer's lease polls are settle-only batches too
    assert synchronous() == 1  # NORMAL
    await broker.publish([make_event(2)])
    assert synchronous() == 2  # FULL again for anything that stores a message
