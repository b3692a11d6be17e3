"""The archiver on each broker (memory, SQLite, RabbitMQ): every published event ends in the
archive and leaves the queue only once written; a failing archive acks nothing; stop flushes;
retention runs at start and then on the clock; and the hub wires it all up."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from hookhub.archive import open_archive
from hookhub.archive.archiver import Archiver
from hookhub.archive.base import Archive
from hookhub.archive.file import FileArchive
from hookhub.broker.base import Binding, Broker
from hookhub.clock import ManualClock
from hookhub.config import parse_config
from hookhub.events import Event
from hookhub.hub import Hub
from hookhub.metrics import Metrics
from tests.broker._support import Harness, delete_namespace_queues

from .test_contract import BASE, HOUR, event, iso

DAY = 86400.0


def fresh(n: int) -> list[Event]:
    types = ("com.a.created", "com.b.deleted", "org.x")
    return [
        Event(id=uuid.uuid4().hex, source="/t", type=types[i % 3], data=b'{"i": %d}' % i, time=iso(BASE + i))
        for i in range(n)
    ]


async def archived(archive: Archive) -> list[Event]:
    async with contextlib.aclosing(archive.scan(0, 4e9)) as rows:
        return [e async for e, _ in rows]


async def wait_until(check: Callable[[], Any], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


class FailingArchive(FileArchive):
    """A file archive whose writes fail the first `failures` times (all of them by default)."""

    def __init__(self, root: Path, failures: int = 10**9) -> None:
        super().__init__(root)
        self.failures = failures
        self.attempts = 0

    async def write(self, events: Sequence[Event]) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise OSError(28, "No space left on device")
        await super().write(events)


async def started(harness: Harness) -> Broker:
    broker = harness.broker()
    await broker.start([Binding(harness.topology.archive_queue, ("#",))])
    return broker


def archiver(broker: Broker, archive: Archive, harness: Harness, **kwargs: Any) -> Archiver:
    kwargs.setdefault("flush_interval", 0.05)
    kwargs.setdefault("batch_max", 40)
    return Archiver(broker, archive, harness.topology.archive_queue, retention=30 * DAY, **kwargs)


async def test_every_published_event_is_archived_then_acked(harness: Harness, tmp_path: Path) -> None:
    broker = await started(harness)
    archive = open_archive(f"file://{tmp_path}/archive")
    metrics = Metrics()
    worker = archiver(broker, archive, harness, metrics=metrics)
    await worker.start()
    events = fresh(230)
    for i in range(0, len(events), 23):
        await broker.publish(events[i : i + 23])

    async def done() -> bool:
        return len(await archived(archive)) >= len(events)

    await wait_until(done)
    await worker.stop()
    assert sorted(e.id for e in await archived(archive)) == sorted(e.id for e in events)
    assert {e.id: e for e in await archived(archive)} == {e.id: e for e in events}
    assert await harness.read(harness.topology.archive_queue) == []
    assert metrics.archived._value.get() == len(events)
    # batched: a few objects, not one per event
    assert len(list((tmp_path / "archive").rglob("*.jsonl.gz"))) <= len(events) // 10


async def test_a_failing_archive_acks_nothing(harness: Harness, tmp_path: Path) -> None:
    broker = await started(harness)
    archive = FailingArchive(tmp_path / "archive")
    worker = archiver(broker, archive, harness)
    await worker.start()
    events = fresh(25)
    await broker.publish(events)

    async def tried() -> bool:
        return archive.attempts >= 1

    await wait_until(tried)
    await worker.stop()
    assert worker.failures >= 1
    assert await archived(archive) == []
    left = await harness.read(harness.topology.archive_queue)
    assert sorted(m.event.id for m in left) == sorted(e.id for e in events)


async def test_after_a_failed_write_the_batch_is_archived_later(harness: Harness, tmp_path: Path) -> None:
    broker = await started(harness)
    archive = FailingArchive(tmp_path / "archive", failures=1)
    worker = archiver(broker, archive, harness)
    await worker.start()
    events = fresh(60)
    await broker.publish(events)

    async def done() -> bool:
        return {e.id for e in await archived(archive)} >= {e.id for e in events}

    await wait_until(done)  # after the back-off, the released events come back and are written
    await worker.stop()
    assert archive.attempts >= 2 and worker.failures == 0
    assert await harness.read(harness.topology.archive_queue) == []


async def test_stop_writes_and_acks_what_is_collected(harness: Harness, tmp_path: Path) -> None:
    broker = await started(harness)
    archive = open_archive(f"file://{tmp_path}/archive")
    worker = archiver(broker, archive, harness, flush_interval=3600.0, batch_max=1000)
    await worker.start()
    events = fresh(30)
    await broker.publish(events)

    async def collected() -> bool:
        return worker.pending == len(events)

    await wait_until(collected)
    assert await archived(archive) == []  # nothing flushed yet: neither full nor due
    await worker.stop()
    assert sorted(e.id for e in await archived(archive)) == sorted(e.id for e in events)
    assert await harness.read(harness.topology.archive_queue) == []
    await worker.stop()  # a second stop is a no-op


async def test_retention_runs_at_start_and_then_every_hour(tmp_path: Path, harness: Harness) -> None:
    if harness.kind != "memory":
        pytest.skip("retention does not depend on the broker")
    broker = await started(harness)
    archive = open_archive(f"file://{tmp_path}/archive")
    # three days of hours before BASE, three hours from BASE on
    await archive.write([event(BASE + h * HOUR, h) for h in range(-72, 3)])
    clock = ManualClock(start=BASE + DAY + 1)
    worker = Archiver(
        broker, archive, harness.topology.archive_queue, retention=DAY, clock=clock, flush_interval=0.05
    )
    await worker.start()

    async def first_hour() -> bool:
        return (await archived(archive))[0].time == iso(BASE)

    await wait_until(first_hour)  # at start: every hour ended by BASE is gone
    await clock.advance(HOUR)
    await wait_until(lambda: _first_is(archive, BASE + HOUR))
    await clock.advance(HOUR)
    await wait_until(lambda: _first_is(archive, BASE + 2 * HOUR))
    await worker.stop()


async def _first_is(archive: Archive, at: float) -> bool:
    return (await archived(archive))[0].time == iso(at)


async def test_the_hub_archives_every_event_when_it_delivers(
    tmp_path: Path, namespace: str, harness: Harness
) -> None:
    if harness.kind == "memory":
        pytest.skip("a hub runs on SQLite or RabbitMQ")
    config = parse_config(
        {
            "broker": harness.url,
            "store": f"sqlite:///{tmp_path}/store.db",
            "archive": f"file://{tmp_path}/archive",
            "namespace": namespace,
        },
        environ={},
    )
    hub = Hub(config)
    try:
        await hub.start(dispatch=True)
        events = fresh(50)
        await hub.broker.publish(events)

        async def done() -> bool:
            return len(await archived(hub.archive)) >= len(events)

        await wait_until(done)
        assert hub.metrics.archived._value.get() == len(events)
    finally:
        await hub.close()
        if harness.kind == "rabbitmq":
            await asyncio.to_thread(delete_namespace_queues, harness.url, namespace)
    assert sorted(e.id for e in await archived(open_archive(f"file://{tmp_path}/archive"))) == sorted(
        e.id for e in events
    )
