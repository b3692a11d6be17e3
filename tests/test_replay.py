"""Interval resends from a real file archive, through a real SQLite job store, onto the in-memory
broker (RabbitMQ in one run): exactly the matching events of [from, to), marked as replays; a dry
run that sends nothing; cancel; a stop and a restart that neither lose nor repeat; pacing."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hookhub.archive import open_archive
from hookhub.archive.base import Archive
from hookhub.broker.base import Binding, Broker, Topology
from hookhub.broker.memory import MemoryBroker, MemoryServer
from hookhub.config import SubscriptionConfig
from hookhub.events import REPLAY_EXTENSION, Event
from hookhub.replay import ReplayRunner, event_time
from hookhub.store import SqlStore
from hookhub.store.records import ReplayJob
from tests.broker._support import UNREACHABLE_AMQP, Harness

BASE = 1_767_225_600.0  # 2026-01-01T00:00:00Z, on an hour


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event(at: float, type_: str = "com.test.created") -> Event:
    return Event(id=uuid.uuid4().hex, source="/test", type=type_, data=b'{"a": 1}\xff', time=iso(at))


def sub(**overrides: Any) -> SubscriptionConfig:
    return SubscriptionConfig.model_validate(
        {"url": "http://127.0.0.1:9/", "types": ["com.test.#"], **overrides}
    )


class Setup:
    """A store, an archive, a broker and the subscriptions a runner resolves names against."""

    def __init__(
        self, store: SqlStore, archive: Archive, broker: Broker, server: MemoryServer | None
    ) -> None:
        self.store = store
        self.archive = archive
        self.broker = broker
        self.server = server
        self.topology: Topology = broker.topology  # type: ignore[attr-defined]
        self.subs: dict[str, SubscriptionConfig] = {"crm": sub()}
        self.runners: list[ReplayRunner] = []

    def target(self, name: str) -> tuple[SubscriptionConfig, str] | None:
        config = self.subs.get(name)
        return None if config is None else (config, self.topology.subscription_queue(name))

    def runner(self, owner: str = "a", **kwargs: Any) -> ReplayRunner:
        kwargs.setdefault("save_seconds", 0.2)
        kwargs.setdefault("poll_seconds", 0.1)
        runner = ReplayRunner(self.broker, self.store.jobs, self.archive, self.target, owner=owner, **kwargs)
        self.runners.append(runner)
        return runner

    def queued(self, name: str = "crm") -> list[Event]:
        assert self.server is not None
        messages = self.server.queues.get(self.topology.subscription_queue(name), {}).values()
        assert all(m.attempts == 0 for m in messages)  # each one a fresh attempt 1
        return [Event.from_attributes({k[3:]: v for k, v in m.headers.items()}, m.body) for m in messages]

    async def wait(self, job_id: str, *states: str, timeout: float = 10.0) -> ReplayJob:
        deadline = time.monotonic() + timeout
        while True:
            job = await self.store.jobs.get(job_id)
            assert job is not None
            if job.state in states:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job still {job.state} after {timeout}s: {job}")
            await asyncio.sleep(0.02)

    async def wait_until(self, check: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.01)


class SlowBroker(MemoryBroker):
    """The in-memory broker with publishes that complete after a random delay, out of order."""

    async def schedule(self, queue: str, event: Event, *, attempt: int, delay: float) -> None:
        await asyncio.sleep(random.uniform(0, 0.004))
        await super().schedule(queue, event, attempt=attempt, delay=delay)


async def make_setup(tmp_path: Path, namespace: str, broker_class: type[MemoryBroker]) -> Setup:
    store = SqlStore(f"sqlite:///{tmp_path}/store.db")
    await store.start()
    server = MemoryServer()
    broker = broker_class(Topology(namespace), server=server)
    await broker.start()
    return Setup(store, open_archive(f"file://{tmp_path}/archive"), broker, server)


async def close(setup: Setup) -> None:
    for runner in setup.runners:
        await runner.stop()
    await setup.broker.close()
    await setup.archive.close()
    await setup.store.close()


@pytest.fixture
async def setup(tmp_path: Path, namespace: str) -> AsyncIterator[Setup]:
    s = await make_setup(tmp_path, namespace, MemoryBroker)
    yield s
    await close(s)


async def archive_spread(archive: Archive, n: int, span: float, other_every: int | None = 3) -> list[Event]:
    """`n` events over `span` seconds from BASE; every `other_every`-th one of a type crm ignores."""
    events = [
        event(
            BASE + i * span / n,
            "com.other.thing" if other_every and i % other_every == 1 else "com.test.created",
        )
        for i in range(n)
    ]
    await archive.write(events)
    return events


def in_interval(events: list[Event], start: float, end: float) -> list[Event]:
    return [e for e in events if start <= (event_time(e) or 0) < end]


def matching(events: list[Event]) -> list[Event]:
    return [e for e in events if e.type.startswith("com.test.")]


async def test_resend_sends_exactly_the_matching_events_of_the_interval(setup: Setup) -> None:
    events = await archive_spread(setup.archive, 180, span=3 * 3600)
    start, end = BASE + 1800, BASE + 9000  # across three hour partitions, cutting two
    runner = setup.runner()
    runner.start()

    job = await runner.submit("crm", start, end)
    assert job.state == "queued"
    done = await setup.wait(job.id, "done")

    expected = matching(in_interval(events, start, end))
    sent = setup.queued()
    assert sorted(e.id for e in sent) == sorted(e.id for e in expected)  # none missing, none twice
    assert {e.extensions[REPLAY_EXTENSION] for e in sent} == {job.id}
    originals = {e.id: e for e in expected}
    for e in sent:  # the archived event itself, plus the replay mark
        assert {**e.extensions} == {**originals[e.id].extensions, REPLAY_EXTENSION: job.id}
        assert (e.data, e.time, e.source, e.type) == (
            originals[e.id].data,
            originals[e.id].time,
            "/test",
            e.type,
        )
    assert (done.sent, done.scanned) == (len(expected), len(in_interval(events, start, end)))
    assert done.finished_at is not None and done.error is None
    assert setup.queued("other") == []


async def test_dry_run_counts_and_samples_without_sending(setup: Setup) -> None:
    events = await archive_spread(setup.archive, 90, span=3 * 3600)
    start, end = BASE + 600, BASE + 7200
    runner = setup.runner()

    dry = await runner.dry_run("crm", start, end)

    expected = matching(in_interval(events, start, end))
    assert dry.count == len(expected)
    assert len(dry.sample) == 10
    assert {e.id for e in dry.sample} <= {e.id for e in expected}
    assert dry.first == pytest.approx(min(event_time(e) or 0 for e in expected))
    assert dry.last == pytest.approx(max(event_time(e) or 0 for e in expected))
    assert setup.queued() == []
    assert await setup.store.jobs.list() == []

    empty = await runner.dry_run("crm", BASE - 7200, BASE - 3600)
    assert (empty.count, empty.sample, empty.first, empty.last) == (0, [], None, None)


async def test_unknown_subscription_and_empty_interval_are_refused(setup: Setup) -> None:
    runner = setup.runner()
    with pytest.raises(KeyError):
        await runner.submit("nobody", BASE, BASE + 60)
    with pytest.raises(KeyError):
        await runner.dry_run("nobody", BASE, BASE + 60)
    for start, end in ((BASE, BASE), (BASE + 60, BASE)):
        with pytest.raises(ValueError, match="empty"):
            await runner.submit("crm", start, end)
        with pytest.raises(ValueError, match="empty"):
            await runner.dry_run("crm", start, end)
    assert await setup.store.jobs.list() == []


async def test_cancel_stops_the_job_and_the_runner_goes_on(setup: Setup) -> None:
    await archive_spread(setup.archive, 300, span=600, other_every=None)
    setup.subs["crm"] = sub(rate_limit=50)
    runner = setup.runner()
    runner.start()
    job = await runner.submit("crm", BASE, BASE + 600)
    await setup.wait_until(lambda: len(setup.queued()) >= 60)

    cancelled = await runner.cancel(job.id)

    assert cancelled is not None and cancelled.state == "cancelled"
    await asyncio.sleep(0.1)
    stopped_at = len(setup.queued())
    await asyncio.sleep(0.4)
    assert len(setup.queued()) == stopped_at < 300  # nothing more goes out
    assert (await setup.wait(job.id, "cancelled")).finished_at is not None
    assert await runner.cancel(uuid.uuid4().hex) is None

    setup.subs["crm"] = sub()
    second = await runner.submit("crm", BASE, BASE + 60)  # the runner takes the next job
    assert (await setup.wait(second.id, "done")).sent == 30


async def test_stop_and_restart_neither_lose_nor_repeat(tmp_path: Path, namespace: str) -> None:
    setup = await make_setup(tmp_path, namespace, SlowBroker)
    try:
        events = await archive_spread(setup.archive, 1500, span=4 * 3600)
        setup.subs["crm"] = sub(rate_limit=400)  # a burst of 400, then 400 a second
        first = setup.runner("a", window=64)
        first.start()
        job = await first.submit("crm", BASE, BASE + 4 * 3600)
        await setup.wait_until(lambda: len(setup.queued()) >= 500)

        await first.stop()

        stopped = await setup.store.jobs.get(job.id)
        assert stopped is not None and stopped.state == "queued" and stopped.cursor is not None
        assert 500 <= stopped.sent == len(setup.queued()) < len(matching(events))  # exactly what went out
        await setup.store.close()  # the process restarts: a new store, the job read back from disk
        setup.store = SqlStore(f"sqlite:///{tmp_path}/store.db")
        await setup.store.start()
        again = await setup.store.jobs.get(job.id)
        assert again is not None
        assert (again.state, again.sent, again.scanned, again.cursor) == (
            "queued",
            stopped.sent,
            stopped.scanned,
            stopped.cursor,
        )

        second = setup.runner("b", window=64)
        second.start()
        done = await setup.wait(job.id, "done", timeout=20)

        sent = [e.id for e in setup.queued()]
        assert len(sent) == len(set(sent))  # no repeats
        assert set(sent) == {e.id for e in matching(events)}  # no loss
        assert (done.sent, done.scanned) == (len(sent), len(events))
    finally:
        await close(setup)


async def test_a_broker_outage_holds_the_job_and_a_stop_keeps_every_event(setup: Setup) -> None:
    events = await archive_spread(setup.archive, 400, span=600, other_every=None)
    setup.subs["crm"] = sub(rate_limit=200)
    first = setup.runner("a")
    first.start()
    job = await first.submit("crm", BASE, BASE + 600)
    await setup.wait_until(lambda: len(setup.queued()) >= 220)
    assert setup.server is not None
    setup.server.down = True
    await asyncio.sleep(0.6)  # publishes fail and are retried; the job keeps its heartbeat
    running = await setup.store.jobs.get(job.id)
    assert running is not None and running.state == "running" and running.sent < 400

    await first.stop()  # with publishes still failing

    stopped = await setup.store.jobs.get(job.id)
    assert stopped is not None and stopped.state == "queued"
    assert stopped.sent == len(setup.queued())
    setup.server.down = False
    second = setup.runner("b")
    second.start()
    await setup.wait(job.id, "done")
    sent = [e.id for e in setup.queued()]
    assert sorted(sent) == sorted(e.id for e in events)  # none lost, none twice


async def test_rate_limit_paces_the_resend(setup: Setup) -> None:
    await archive_spread(setup.archive, 125, span=600, other_every=None)
    setup.subs["crm"] = sub(rate_limit=50)
    runner = setup.runner()
    runner.start()
    started = time.monotonic()
    job = await runner.submit("crm", BASE, BASE + 600)
    await setup.wait(job.id, "done")
    # a second's burst, then 50 a second
    assert time.monotonic() - started >= 1.4
    assert len(setup.queued()) == 125


async def test_a_subscription_deleted_mid_job_fails_it(setup: Setup) -> None:
    await archive_spread(setup.archive, 200, span=600, other_every=None)
    setup.subs["crm"] = sub(rate_limit=100)
    runner = setup.runner()
    runner.start()
    job = await runner.submit("crm", BASE, BASE + 600)
    await setup.wait_until(lambda: len(setup.queued()) >= 110)

    del setup.subs["crm"]

    failed = await setup.wait(job.id, "failed")
    assert failed.error is not None and "'crm' was deleted" in failed.error
    assert failed.sent == len(setup.queued()) < 200


async def test_a_job_cancelled_elsewhere_stops_at_the_next_save(setup: Setup) -> None:
    await archive_spread(setup.archive, 200, span=600, other_every=None)
    setup.subs["crm"] = sub(rate_limit=100)
    first = setup.runner("a")
    first.start()
    job = await first.submit("crm", BASE, BASE + 600)
    await setup.wait_until(lambda: len(setup.queued()) >= 110)
    await setup.store.jobs.cancel(job.id)  # as another replica's DELETE would

    await asyncio.sleep(0.5)  # the runner notices at its next save
    count = len(setup.queued())
    await asyncio.sleep(0.3)
    assert len(setup.queued()) == count < 200
    assert (await setup.wait(job.id, "cancelled")).state == "cancelled"


@pytest.mark.rabbitmq
async def test_resend_on_rabbitmq(tmp_path: Path, rabbitmq_url: str, namespace: str) -> None:
    harness = Harness("rabbitmq", rabbitmq_url, Topology(namespace), UNREACHABLE_AMQP)
    store = SqlStore(f"sqlite:///{tmp_path}/store.db")
    await store.start()
    archive = open_archive(f"file://{tmp_path}/archive")
    try:
        queue = harness.sub("crm")
        broker = harness.broker()
        await broker.start([Binding(queue, ("com.test.#",))])
        events = await archive_spread(archive, 2000, span=2 * 3600)
        setup = Setup(store, archive, broker, None)
        runner = setup.runner()
        runner.start()
        job = await runner.submit("crm", BASE, BASE + 2 * 3600)
        done = await setup.wait(job.id, "done", timeout=30)
        await runner.stop()

        back = await harness.read(queue)
        assert sorted(m.event.id for m in back) == sorted(e.id for e in matching(events))
        assert {m.event.extensions[REPLAY_EXTENSION] for m in back} == {job.id}
        assert done.sent == len(back)
    finally:
        await harness.cleanup()
        await archive.close()
        await store.close()
