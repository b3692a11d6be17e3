"""One resend job running in this process: the archive scan, the window of publishes, the
saved position.

The position saved is the archive cursor of the last event whose publish completed together with
every earlier one (publishes complete out of order), with the counters as of that event. So a
graceful stop, which stops reading at an event boundary and lets the publishes under way finish,
saves exactly what was sent; a crash repeats at most a save interval's and a window's worth.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from hookhub.archive.base import Archive
from hookhub.broker.base import Broker, BrokerUnavailable, topic_matches
from hookhub.config import SubscriptionConfig
from hookhub.events import REPLAY_EXTENSION, Event
from hookhub.fanout.dispatcher import RateLimiter
from hookhub.store.base import ReplayJobs
from hookhub.store.records import JOB_DONE, JOB_FAILED, JOB_QUEUED, ReplayJob

log = logging.getLogger(__name__)

Target = Callable[[str], tuple[SubscriptionConfig, str] | None]  # name -> (config, queue), None if gone

WINDOW = 256  # publishes read ahead of the saved position
SAVE_SECONDS = 1.0  # progress (and heartbeat) save interval
STOP_GRACE = 10.0  # a stop waits this long for publishes under way
PUBLISH_RETRY = (0.2, 0.5, 1.0, 2.0, 5.0)  # backoff while the broker is unavailable

# why a run ended early
STOPPED = "stopped"  # graceful stop: save the exact position and hand the job back
LOST = "lost"  # cancelled or taken over: stop at once, write nothing more
FAILED = "failed"  # the job cannot go on: save where it got and fail it


def matches(types: tuple[str, ...], event: Event) -> bool:
    return any(topic_matches(pattern, event.type) for pattern in types)


def as_replay(event: Event, job_id: str) -> Event:
    """The event marked as part of resend `job_id` (a delivery of its own, with a replay header)."""
    return dataclasses.replace(event, extensions={**event.extensions, REPLAY_EXTENSION: job_id})


@dataclass(slots=True)
class Settings:
    """What a run needs from its runner."""

    broker: Broker
    jobs: ReplayJobs
    archive: Archive
    target: Target
    owner: str
    window: int = WINDOW
    save_seconds: float = SAVE_SECONDS


@dataclass(slots=True)
class _Pending:
    """A publish under way, and the position (with the counters) once it and every earlier one
    completed; later non-matching events move that position on without a publish of their own."""

    cursor: str
    scanned: int
    sent: int
    done: bool = False


@dataclass(slots=True)
class _Progress:
    cursor: str | None
    scanned: int
    sent: int


class JobRun:
    """One job being run by this process, until it is done, failed, stopped or lost."""

    def __init__(self, settings: Settings, job: ReplayJob) -> None:
        self.settings = settings
        self.job = job
        self.pending: deque[_Pending] = deque()
        self.reason: str | None = None
        self.error: str | None = None
        self.interrupted = asyncio.Event()
        self.committed = _Progress(self.job.cursor, self.job.scanned, self.job.sent)
        self.scanned, self.sent = self.job.scanned, self.job.sent
        self.slots = asyncio.Semaphore(self.settings.window)
        self.publishes: set[asyncio.Task[None]] = set()
        self.scan_task: asyncio.Task[None] | None = None
        self.types: tuple[str, ...] = ()
        self.queue = ""
        self.limiter: RateLimiter | None = None

    def interrupt(self, reason: str, error: str | None = None) -> None:
        if self.reason is None or reason == LOST:
            self.reason, self.error = reason, error
        self.interrupted.set()
        if self.scan_task is not None:
            self.scan_task.cancel()

    def _apply(self, target: tuple[SubscriptionConfig, str]) -> None:
        """Follow the subscription's current types, queue and rate limit."""
        config, self.queue = target
        self.types = tuple(config.types)
        rate = config.rate_limit
        if rate is None:
            self.limiter = None
        elif self.limiter is None or self.limiter.rate != rate:
            self.limiter = RateLimiter(rate)

    async def execute(self) -> None:
        job, settings = self.job, self.settings
        target = settings.target(job.subscription)
        if target is None:
            gone = f"subscription {job.subscription!r} no longer exists"
            await settings.jobs.finish(job.id, JOB_FAILED, gone)
            return
        self._apply(target)
        log.info("resend job %s running (%s, %d sent so far)", job.id, job.subscription, job.sent)
        ticking = asyncio.Event()
        ticker = asyncio.create_task(self._tick(ticking))
        self.scan_task = asyncio.create_task(self._scan())
        if self.reason is not None:  # interrupted before the scan started
            self.scan_task.cancel()
        complete = False
        try:
            try:
                await self.scan_task
                complete = True
            except asyncio.CancelledError:
                if self.reason is None:  # the runner itself is being cancelled
                    raise
            except Exception as exc:
                self.interrupt(FAILED, f"reading the archive failed: {exc}")
            await self._drain()
        finally:
            ticking.set()
            await ticker
            for task in self.publishes:
                task.cancel()
        await self._finish(complete and not self.pending)

    async def _scan(self) -> None:
        job = self.job
        async with contextlib.aclosing(
            self.settings.archive.scan(job.start, job.end, cursor=job.cursor)
        ) as scan:
            async for event, cursor in scan:
                if not matches(self.types, event):
                    self._skipped(cursor)
                    continue
                if self.limiter is not None:
                    await self.limiter.acquire()
                await self.slots.acquire()
                # no await from here on: a stop lands before this event or after it, never inside
                self.scanned += 1
                self.sent += 1
                entry = _Pending(cursor, self.scanned, self.sent)
                self.pending.append(entry)
                task = asyncio.create_task(self._publish(entry, self.queue, as_replay(event, job.id)))
                self.publishes.add(task)
                task.add_done_callback(self.publishes.discard)

    def _skipped(self, cursor: str) -> None:
        self.scanned += 1
        if self.pending:
            tail = self.pending[-1]
            tail.cursor, tail.scanned = cursor, self.scanned
        else:
            self.committed = _Progress(cursor, self.scanned, self.sent)

    async def _publish(self, entry: _Pending, queue: str, event: Event) -> None:
        attempt = 0
        while True:
            try:
                await self.settings.broker.schedule(queue, event, attempt=1, delay=0)
                break
            except BrokerUnavailable as exc:
                if self.interrupted.is_set():
                    return
                if attempt == 0:
                    log.warning("resend job %s: publish failed (%s); retrying", self.job.id, exc)
                await asyncio.sleep(PUBLISH_RETRY[min(attempt, len(PUBLISH_RETRY) - 1)])
                attempt += 1
            except Exception as exc:
                self.interrupt(FAILED, f"publishing event {event.id} failed: {exc}")
                return
        entry.done = True
        while self.pending and self.pending[0].done:
            head = self.pending.popleft()
            self.committed = _Progress(head.cursor, head.scanned, head.sent)
            self.slots.release()

    async def _drain(self) -> None:
        """Wait for the publishes under way: all of them, or after an interruption up to the grace."""
        if not self.publishes:
            return
        everything = asyncio.ensure_future(asyncio.wait(set(self.publishes)))
        interrupted = asyncio.ensure_future(self.interrupted.wait())
        await asyncio.wait({everything, interrupted}, return_when=asyncio.FIRST_COMPLETED)
        interrupted.cancel()
        if not everything.done():
            await asyncio.wait({everything}, timeout=0 if self.reason == LOST else STOP_GRACE)
            everything.cancel()

    async def _tick(self, stop: asyncio.Event) -> None:
        """Save progress (the heartbeat) every interval; follow or give up on the subscription."""
        job = self.job
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.save_seconds)
            if stop.is_set() or self.reason is not None:
                return
            target = self.settings.target(job.subscription)
            if target is None:
                self.interrupt(FAILED, f"subscription {job.subscription!r} was deleted while the job ran")
                return
            self._apply(target)
            try:
                if not await self._save():
                    self.interrupt(LOST)
                    return
            except Exception as exc:  # the store is down: the next save catches up
                log.warning("resend job %s: could not save progress: %s", job.id, exc)

    async def _save(self) -> bool:
        now = self.committed  # saved even when unchanged: it is the job's heartbeat
        return await self.settings.jobs.save_progress(
            self.job.id, scanned=now.scanned, sent=now.sent, cursor=now.cursor, owner=self.settings.owner
        )

    async def _finish(self, complete: bool) -> None:
        job, jobs = self.job, self.settings.jobs
        if self.reason == LOST:
            log.info("resend job %s stopped here: cancelled or taken over", job.id)
            return
        if not await self._save():
            log.info("resend job %s stopped here: cancelled or taken over", job.id)
            return
        done = self.committed
        if complete:
            await jobs.finish(job.id, JOB_DONE)
            log.info("resend job %s done: %d events read, %d sent", job.id, done.scanned, done.sent)
        elif self.reason == FAILED:
            await jobs.finish(job.id, JOB_FAILED, self.error)
            log.error("resend job %s failed: %s", job.id, self.error)
        else:  # stopped: back to the queue, resumed from the exact position by the next runner
            await jobs.finish(job.id, JOB_QUEUED)
            log.info("resend job %s handed back at %d sent", job.id, done.sent)
