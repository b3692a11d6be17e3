"""Resend benchmark (issue #7): a resend of archived events to one subscription on RabbitMQ,
against the bare archive read of the same objects in the same run.

    .venv/bin/python -m bench.resend [--events 100000] [--url amqp://...]

Setup (not timed): `--events` events written to a file archive in a temporary directory, spread
over a few hours so the scan crosses partitions. Then, timed:
  bare read   `archive.scan` over the whole interval, every event decoded, nothing else;
  resend      a `ReplayRunner` job for the same interval: scan, match, mark as replay, publish
              confirmed to the subscription's quorum queue, progress saved to an SQLite store.
Reported: events/s of each, their ratio, and the peak resident memory of each phase (sampled),
which stays flat however many events a resend covers. The subscription's queue must then hold
exactly `--events` messages. The run's queues and exchanges are deleted, also on errors and Ctrl-C.
Exit status: 0 when every event was resent exactly once, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import payloads, rabbit
from hookhub.archive import open_archive
from hookhub.archive.base import Archive
from hookhub.broker.base import Binding, Topology
from hookhub.broker.rabbitmq import RabbitMQBroker
from hookhub.config import SubscriptionConfig
from hookhub.events import Event
from hookhub.replay import ReplayRunner
from hookhub.store import SqlStore

SUBSCRIPTION = "resend"
SPAN_SECONDS = 6 * 3600.0  # the archived events' time range: several hour partitions
WRITE_BATCH = 1000
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class PeakMemory:
    """Samples this process's resident set every few milliseconds while a phase runs (the kernel's
    own high-water mark, ru_maxrss, never goes down, so it cannot tell one phase from another)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.start_bytes = self.peak_bytes = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_bytes = max(self.peak_bytes, rss_bytes())

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, rss_bytes())


def rss_bytes() -> int:
    """Resident memory now (Linux), or the process's peak where /proc is missing."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class Phase:
    name: str
    events: int
    seconds: float
    start_mib: float
    peak_mib: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        grew = self.peak_mib - self.start_mib
        return (
            f"{self.name:<10} {self.events:>9,} events in {self.seconds:7.2f} s"
            f" = {self.rate:>10,.0f} events/s"
            f"   peak RSS {self.peak_mib:7.1f} MiB (+{grew:.1f} MiB during the phase)"
        )


async def timed(name: str, count: Callable[[], Awaitable[int]]) -> Phase:
    with PeakMemory() as memory:
        started = time.perf_counter()
        events = await count()
        seconds = time.perf_counter() - started
    mib = 1024 * 1024
    return Phase(name, events, seconds, memory.start_bytes / mib, memory.peak_bytes / mib)


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def fill(archive: Archive, n: int) -> None:
    """Write `n` events in batches, so the setup itself stays small in memory."""
    data = payloads.event_data()
    step = SPAN_SECONDS / max(n, 1)
    for first in range(0, n, WRITE_BATCH):
        batch = [
            Event(
                id=uuid.uuid4().hex,
                source=payloads.EVENT_SOURCE,
                type=payloads.EVENT_TYPE,
                data=data,
                datacontenttype="application/json",
                time=iso(START + i * step),
            )
            for i in range(first, min(n, first + WRITE_BATCH))
        ]
        await archive.write(batch)


async def run(events: int, url: str, workdir: Path, namespace: str) -> int:
    archive = open_archive(f"file://{workdir}/archive")
    print(f"archiving {events:,} events (setup, not timed)...", flush=True)
    await fill(archive, events)
    end = START + SPAN_SECONDS + 1

    async def bare_read() -> int:
        seen = 0
        async for _event, _cursor in archive.scan(START, end):
            seen += 1
        return seen

    topology = Topology(namespace)
    queue = topology.subscription_queue(SUBSCRIPTION)
    config = SubscriptionConfig.model_validate({"url": "http://127.0.0.1:9/", "types": ["#"]})
    broker = RabbitMQBroker(url, topology, connection_name=f"hookhub-bench-{namespace}")
    store = SqlStore(f"sqlite:///{workdir}/store.db")
    await store.start()
    await broker.start([Binding(queue, ("#",))])
    runner = ReplayRunner(
        broker, store.jobs, archive, lambda _name: (config, queue), owner="bench", poll_seconds=0.05
    )

    async def resend() -> int:
        runner.start()
        job = await runner.submit(SUBSCRIPTION, START, end)
        while True:
            current = await store.jobs.get(job.id)
            assert current is not None
            if current.state not in ("queued", "running"):
                break
            await asyncio.sleep(0.01)
        if current.state != "done":
            raise RuntimeError(f"the resend job ended {current.state}: {current.error}")
        return current.sent

    try:
        read = await timed("bare read", bare_read)
        sent = await timed("resend", resend)
        depth = (await broker.queue_depths()).get(queue)
    finally:
        await runner.stop()
        await broker.close()
        await store.close()
        await archive.close()

    print(read.line())
    print(sent.line())
    print(f"ratio      resend / bare read = {sent.rate / read.rate:.2f}" if read.rate else "ratio      n/a")
    whole = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process peak RSS (ru_maxrss, setup included): {whole:.1f} MiB")
    ok = read.events == events and sent.events == events and depth == events
    print(f"queue {queue} holds {depth} messages: {'every event exactly once' if ok else 'MISMATCH'}")
    return 0 if ok else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.resend", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events to archive and resend")
    parser.add_argument("--url", default=os.environ.get("HOOKHUB_BENCH_RABBITMQ", rabbit.DEFAULT_URL))
    args = parser.parse_args(argv)
    if args.events < 1:
        parser.error("--events must be at least 1")
    rabbit.local_only(args.url)  # the bench loads nothing but this machine
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    try:
        with tempfile.TemporaryDirectory(prefix="hookhub-resend-") as workdir:
            return asyncio.run(run(args.events, args.url, Path(workdir), namespace))
    except KeyboardInterrupt:
        return 1
    finally:
        rabbit.delete_namespace(args.url, namespace, (SUBSCRIPTION,))


if __name__ == "__main__":
    sys.exit(main())
