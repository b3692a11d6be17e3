"""Resend jobs: every archived event of an interval that matches a subscription's types, put
back on that subscription's queue as a replay, in the background.

A job is streamed from the archive and published pipelined (a bounded window of publishes in
flight), so memory stays flat and RabbitMQ's confirm latency is paid once per window rather than
once per event (`replay_run`). A runner stopped gracefully saves the job's exact position and
hands it back, so the next runner neither loses nor repeats an event.

Each replica runs a runner; the store hands every job to one of them (`ReplayJobs.claim`) and
to another once its heartbeat (the progress save) goes stale. Timing uses real time, whatever
the hub's clock: the clock only stamps the jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from hookhub.archive.base import Archive
from hookhub.broker.base import Broker
from hookhub.clock import SYSTEM_CLOCK, Clock
from hookhub.config import SubscriptionConfig
from hookhub.events import Event
from hookhub.replay_run import LOST, SAVE_SECONDS, STOPPED, WINDOW, JobRun, Settings, Target, matches
from hookhub.store.base import ReplayJobs
from hookhub.store.records import JOB_QUEUED, ReplayJob
from hookhub.subscriptions import UnknownSubscription

log = logging.getLogger(__name__)

STALE_AFTER = 30.0  # a job whose heartbeat is older than this is taken over
POLL_SECONDS = 2.0  # how often an idle runner looks for jobs submitted elsewhere
SAMPLE_SIZE = 10


@dataclass(frozen=True, slots=True)
class DryRun:
    """What a resend would send: how many, a few of them, and their time range."""

    count: int
    sample: list[Event]
    first: float | None  # unix seconds of the earliest matching event
    last: float | None


def event_time(event: Event) -> float | None:
    """An event's `time` as unix seconds; None if Python cannot read it (a leap second)."""
    try:
        return datetime.fromisoformat(event.time.upper()).timestamp()
    except ValueError:
        return None


class ReplayRunner:
    """Submits, previews and cancels resend jobs, and runs them one at a time in the background."""

    def __init__(
        self,
        broker: Broker,
        jobs: ReplayJobs,
        archive: Archive,
        target: Target,
        *,
        owner: str,
        clock: Clock = SYSTEM_CLOCK,
        window: int = WINDOW,
        save_seconds: float = SAVE_SECONDS,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.settings = Settings(broker, jobs, archive, target, owner, window, save_seconds)
        self.jobs = jobs
        self.archive = archive
        self.target = target
        self.owner = owner
        self.clock = clock
        self.poll_seconds = poll_seconds
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._current: JobRun | None = None

    def _config(self, subscription: str) -> SubscriptionConfig:
        found = self.target(subscription)
        if found is None:
            raise UnknownSubscription(subscription)
        return found[0]

    async def submit(self, subscription: str, start: float, end: float) -> ReplayJob:
        """Queue a resend of [start, end); `UnknownSubscription`, or ValueError for an empty interval."""
        self._config(subscription)
        _check_interval(start, end)
        now = self.clock.now()
        job = ReplayJob(uuid.uuid4().hex, subscription, start, end, JOB_QUEUED, now, now)
        await self.jobs.create(job)
        self._wake.set()
        log.info("resend job %s queued: %s, %s to %s", job.id, subscription, _iso(start), _iso(end))
        return job

    async def dry_run(self, subscription: str, start: float, end: float) -> DryRun:
        """Count what a resend of [start, end) would send, sending nothing."""
        types = tuple(self._config(subscription).types)
        _check_interval(start, end)
        count, sample = 0, list[Event]()
        first: float | None = None
        last: float | None = None
        async with contextlib.aclosing(self.archive.scan(start, end)) as scan:
            async for event, _cursor in scan:
                if not matches(types, event):
                    continue
                count += 1
                if len(sample) < SAMPLE_SIZE:
                    sample.append(event)
                at = event_time(event)
                if at is not None:
                    first = at if first is None else min(first, at)
                    last = at if last is None else max(last, at)
        return DryRun(count, sample, first, last)

    async def cancel(self, job_id: str) -> ReplayJob | None:
        """Cancel a queued or running job (here or on another replica, which stops at its next
        save); the job as it now stands, None if unknown."""
        job = await self.jobs.cancel(job_id)
        run = self._current
        if run is not None and run.job.id == job_id:
            run.interrupt(LOST)
        return job

    def start(self) -> None:
        """Start running jobs in the background."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="hookhub-replays")

    async def stop(self) -> None:
        """Stop at an event boundary, save the job's exact position and hand it back."""
        self._stopping = True
        self._wake.set()
        if self._current is not None:
            self._current.interrupt(STOPPED)
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                job = await self.jobs.claim(self.owner, stale_after=STALE_AFTER)
            except Exception as exc:  # the store is down: look again later
                log.warning("could not look for resend jobs: %s", exc)
                job = None
            if job is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
                continue
            self._current = run = JobRun(self.settings, job)
            try:
                if self._stopping:
                    run.interrupt(STOPPED)
                await run.execute()
            except Exception:
                log.exception("resend job %s broke off; it is taken over once its heartbeat is stale", job.id)
            finally:
                self._current = None


def _check_interval(start: float, end: float) -> None:
    if not start < end:
        raise ValueError(f"the interval is empty: from ({_iso(start)}) must be before to ({_iso(end)})")


def _iso(at: float) -> str:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
    except (OverflowError, OSError, ValueError):
        return repr(at)
