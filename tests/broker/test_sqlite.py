"""Embedded-broker-only behaviour: durability on disk, group commit, sharing the file."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time

import pytest

from hookhub.broker import Binding, BrokerUnavailable, Lease, Topology, message_headers
from hookhub.broker.sqlite import MESSAGES_TABLE, SQLiteBroker, sqlite_path
from hookhub.events import Event

from ._support import sqlite_drain


def make_event(i: int = 0, type_: str = "com.test.thing") -> Event:
    return Event(id=f"evt-{i}", source="/s", type=type_, data=b"{}", datacontenttype="application/json")


@pytest.fixture
def topology(namespace: str) -> Topology:
    return Topology(namespace)


async def test_messages_survive_closing_and_reopening(tmp_sqlite_url: str, topology: Topology):
    queue = topology.subscription_queue("crm")
    broker = SQLiteBroker(tmp_sqlite_url, topology)
    await broker.start([Binding(queue, ("#",))])
    await broker.publish([make_event(i) for i in range(10)])
    await broker.close()

    reopened = SQLiteBroker(tmp_sqlite_url, topology)
    await reopened.start([Binding(queue, ("#",))])
    assert await reopened.queue_depths() == {queue: 10, topology.unrouted_queue: 0, topology.dead_queue: 0}
    await reopened.publish([make_event(10)])
    await reopened.close()

    assert [m.message_id for m in sqlite_drain(tmp_sqlite_url, queue)] == [f"evt-{i}" for i in range(11)]


async def test_concurrent_publishes_share_commits(tmp_sqlite_url: str, topology: Topology):
    queue = topology.subscription_queue("crm")
    broker = SQLiteBroker(tmp_sqlite_url, topology)
    await broker.start([Binding(queue, ("#",))])
    before = broker.commits

    await asyncio.gather(*(broker.publish([make_event(i)]) for i in range(500)))

    commits = broker.commits - before
    assert 1 <= commits <= 25, commits  # 500 requests, a handful of fsyncs
    assert len(sqlite_drain(tmp_sqlite_url, queue)) == 500
    await broker.close()


async def test_rows_carry_what_the_consume_side_needs(tmp_sqlite_url: str, topology: Topology):
    queue = topology.subscription_queue("crm")
    broker = SQLiteBroker(tmp_sqlite_url, topology)
    await broker.start([Binding(queue, ("#",))])
    before = time.time()
    await broker.publish([make_event(1)])
    await broker.close()

    conn = sqlite3.connect(sqlite_path(tmp_sqlite_url))
    row = conn.execute(
        f"SELECT enqueued_at, available_at, attempts, lease_id, dead_reason FROM {MESSAGES_TABLE}"
    ).fetchone()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    enqueued_at, available_at, attempts, lease_id, dead_reason = row
    assert before <= enqueued_at == available_at <= time.time()
    assert (attempts, lease_id, dead_reason) == (0, None, None)


async def test_bindings_declared_by_one_process_route_for_another(tmp_sqlite_url: str, topology: Topology):
    """As on RabbitMQ: bindings live in the file, so a publishing process routes by the set the
    latest `start` of any process declared, not by its own copy."""
    queue = topology.subscription_queue("crm")
    fanout = SQLiteBroker(tmp_sqlite_url, topology)
    await fanout.start([Binding(queue, ("com.test.*",))])
    ingest = SQLiteBroker(tmp_sqlite_url, topology)
    await ingest.start([Binding(queue, ("com.test.*",))])
    await ingest.publish([make_event(1)])

    late = topology.subscription_queue("late")  # a subscription added by a restart elsewhere
    restarted = SQLiteBroker(tmp_sqlite_url, topology)
    await restarted.start([Binding(queue, ("com.test.*",)), Binding(late, ("#",))])
    await ingest.publish([make_event(2)])

    assert [m.message_id for m in sqlite_drain(tmp_sqlite_url, queue)] == ["evt-1", "evt-2"]
    assert [m.message_id for m in sqlite_drain(tmp_sqlite_url, late)] == ["evt-2"]
    other = SQLiteBroker(tmp_sqlite_url, Topology(topology.namespace + "x"))  # another namespace
    await other.start()
    await other.publish([make_event(3)])
    assert sqlite_drain(tmp_sqlite_url, queue) == []
    assert [m.message_id for m in sqlite_drain(tmp_sqlite_url, late)] == []
    for broker in (fanout, ingest, restarted, other):
        await broker.close()


OLD_SCHEMA = f"""
CREATE TABLE {MESSAGES_TABLE} (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, routing_key TEXT NOT NULL,
    headers TEXT NOT NULL, body BLOB NOT NULL, enqueued_at REAL NOT NULL, available_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, lease_until REAL
);
"""


async def test_a_file_of_the_previous_schema_is_upgraded_in_place(tmp_sqlite_url: str, topology: Topology):
    queue = topology.subscription_queue("crm")
    event = make_event(1)
    conn = sqlite3.connect(sqlite_path(tmp_sqlite_url), isolation_level=None)
    conn.executescript(OLD_SCHEMA)
    conn.execute(
        f"INSERT INTO {MESSAGES_TABLE} (queue, routing_key, headers, body, enqueued_at, available_at) "
        "VALUES (?, ?, ?, ?, 0, 0)",
        (queue, event.type, json.dumps(message_headers(event)), event.data),
    )
    conn.close()
    broker = SQLiteBroker(tmp_sqlite_url, topology)
    await broker.start([Binding(queue, ("#",))])
    leases: asyncio.Queue[Lease] = asyncio.Queue()

    async def handler(lease: Lease) -> None:
        leases.put_nowait(lease)

    await broker.consume(queue, handler, prefetch=1, lease=30)
    lease = await asyncio.wait_for(leases.get(), 5)
    assert (lease.event, lease.attempt) == (event, 1)
    await broker.ack(lease)
    await broker.publish([make_event(2)])
    await broker.close()
    assert [m.message_id for m in sqlite_drain(tmp_sqlite_url, queue)] == ["evt-2"]


async def test_a_row_whose_text_is_not_utf8_goes_to_the_dead_queue(tmp_sqlite_url: str, topology: Topology):
    """Stored as TEXT with invalid UTF-8 by another writer: it must not fail every lease of the queue."""
    queue = topology.subscription_queue("crm")
    broker = SQLiteBroker(tmp_sqlite_url, topology)
    await broker.start([Binding(queue, ("#",))])
    conn = sqlite3.connect(sqlite_path(tmp_sqlite_url), isolation_level=None)
    conn.execute(
        f"INSERT INTO {MESSAGES_TABLE} (queue, routing_key, headers, body, enqueued_at, available_at) "
        "VALUES (?, '', CAST(? AS TEXT), CAST(? AS TEXT), 0, 0)",
        (queue, b'{"ce-id": "\xff"}', b"\xfe"),
    )
    conn.close()
    await broker.publish([make_event(1)])
    leases: asyncio.Queue[Lease] = asyncio.Queue()

    async def handler(lease: Lease) -> None:
        leases.put_nowait(lease)

    await broker.consume(queue, handler, prefetch=4, lease=30)
    lease = await asyncio.wait_for(leases.get(), 5)
    assert lease.event.id == "evt-1"
    await broker.ack(lease)
    for _ in range(50):
        depths = await broker.queue_depths()
        if depths[topology.dead_queue] == 1:
            break
        await asyncio.sleep(0.05)
    assert depths[topology.dead_queue] == 1 and depths[queue] == 0
    await broker.close()


async def test_waits_for_another_writer_then_times_out(tmp_sqlite_url: str, topology: Topology):
    """The store writes to the same file: a short lock is waited out, a stuck one is a 503."""
    broker = SQLiteBroker(tmp_sqlite_url, topology, busy_timeout=5)
    await broker.start()
    other = sqlite3.connect(sqlite_path(tmp_sqlite_url), isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    threading.Timer(0.3, other.execute, ("COMMIT",)).start()
    await broker.publish([make_event(1)], timeout=5)  # waited for the lock

    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(BrokerUnavailable, match=r"within 0\.3s"):
        await broker.publish([make_event(2)], timeout=0.3)
    other.execute("COMMIT")
    other.close()
    await broker.publish([make_event(3)])
    await broker.close()
    ids = [m.message_id for m in sqlite_drain(tmp_sqlite_url, topology.unrouted_queue)]
    assert ids == ["evt-1", "evt-2", "evt-3"]  # the timed-out one still landed: at-least-once


async def test_becomes_ready_when_the_path_becomes_writable(tmp_path, topology: Topology):
    blocker = tmp_path / "var"
    blocker.write_text("not a directory")
    broker = SQLiteBroker(f"sqlite:///{blocker}/hookhub.db", topology)
    await broker.start()
    assert not await broker.ready()
    with pytest.raises(BrokerUnavailable):
        await broker.publish([make_event(1)])

    blocker.unlink()  # the operator fixes the path; the directory is created on demand
    assert await broker.ready()
    await broker.publish([make_event(2)])
    await broker.close()


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///./var/hookhub.db", "./var/hookhub.db"),
        ("sqlite:///var/hookhub.db", "var/hookhub.db"),
        ("sqlite:////tmp/x/hookhub.db", "/tmp/x/hookhub.db"),
        ("sqlite:////tmp/with%20space.db?timeout=5", "/tmp/with space.db"),
    ],
)
def test_sqlite_url_paths(url: str, path: str):
    assert sqlite_path(url) == path


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "postgresql://x/y"])
def test_sqlite_url_rejects_non_files(url: str):
    with pytest.raises(ValueError):
        sqlite_path(url)
