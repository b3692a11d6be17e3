"""The archiver: consumes `<ns>.archive` (bound to every event) into the archive in batches.

The handler only collects leases; a flush writes the batch as a few objects (one per hour) and
acks the leases only after the write returned, so an event leaves the queue only once it is
durable in the archive. A failed write gives the batch back to the queue and the next flush waits
(backing off) rather than spinning on a full disk or an unreachable bucket. Batches of hundreds
keep the archive from becoming a pile of one-event objects, and each object costs one S3 PUT.

Retention runs here too (at start, then every `expire_every`): whole hours older than
`retention` are deleted. Several replicas may all run it; deleting an hour twice is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from hookhub.archive.base import Archive
from hookhub.broker.base import Broker, Consumer, Lease
from hookhub.clock import SYSTEM_CLOCK, Clock
from hookhub.metrics import Metrics

log = logging.getLogger(__name__)

LEASE_SECONDS = 60.0  # how soon the embedded broker hands a dead archiver's batch to another
EXPIRE_EVERY = 3600.0
BACKOFF_FIRST = 1.0  # after a failed write, the next flush waits this long, doubling up to MAX
BACKOFF_MAX = 30.0


class Archiver:
    def __init__(
        self,
        broker: Broker,
        archive: Archive,
        queue: str,
        *,
        retention: float,
        clock: Clock = SYSTEM_CLOCK,
        metrics: Metrics | None = None,
        batch_max: int = 500,
        flush_interval: float = 1.0,
        lease: float = LEASE_SECONDS,
        expire_every: float = EXPIRE_EVERY,
    ) -> None:
        if batch_max < 1 or flush_interval <= 0 or retention <= 0:
            raise ValueError("batch_max, flush_interval and retention must be positive")
        self.broker = broker
        self.archive = archive
        self.queue = queue
        self.retention = retention
        self.clock = clock
        self.metrics = metrics
        self.batch_max = batch_max
        self.flush_interval = flush_interval
        self.lease = lease
        self.expire_every = expire_every
        self.failures = 0  # consecutive failed writes
        self._pending: list[Lease] = []
        self._wake = asyncio.Event()  # a batch is full, or stop
        self._stop = asyncio.Event()
        self._consumer: Consumer | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._expirer: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Events collected and not yet written."""
        return len(self._pending)

    async def start(self) -> None:
        if self._consumer is not None:
            return
        self._stop.clear()
        self._consumer = await self.broker.consume(
            self.queue, self._take, prefetch=self.batch_max, lease=self.lease
        )
        self._flusher = asyncio.create_task(self._flush_loop(), name="archiver-flush")
        self._expirer = asyncio.create_task(self._expire_loop(), name="archiver-expire")

    async def stop(self) -> None:
        """Write and ack what is collected, then stop consuming.

        The handler returns at once, so `Consumer.cancel` (whose grace only waits for handler
        tasks) would give back every collected lease: the last flush therefore comes first, and
        the few leases that arrive between it and the cancel go back to the queue unwritten.
        """
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        self._stop.set()
        self._wake.set()
        if self._expirer is not None:
            self._expirer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expirer
        if self._flusher is not None:
            await self._flusher  # it finishes the flush under way, if any, and then ends
        await self.flush()
        await consumer.cancel()
        self._pending.clear()  # taken after the last flush: `cancel` gave them back

    async def _take(self, lease: Lease) -> None:
        """The consumer's handler: collect, and leave the lease unsettled until its flush."""
        self._pending.append(lease)
        if len(self._pending) >= self.batch_max:
            self._wake.set()

    async def _flush_loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            if not await self.flush():
                backoff = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self.failures - 1))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), backoff)

    async def flush(self) -> bool:
        """Write what is collected, then ack it (or release it if the write failed); False on
        a failed write."""
        batch, self._pending = self._pending, []
        if not batch:
            return True
        try:
            await self.archive.write([lease.event for lease in batch])
        except Exception as exc:
            self.failures += 1
            log.error(
                "archiving %d events failed (%d in a row), they go back to %s: %r",
                len(batch),
                self.failures,
                self.queue,
                exc,
            )
            await self._release(batch)
            return False
        self.failures = 0
        if self.metrics is not None:
            self.metrics.archived.inc(len(batch))
        try:
            await self.broker.ack_many(batch)
        except Exception as exc:  # unsettled leases come back later: at worst archived twice
            log.warning("could not ack %d archived events of %s: %r", len(batch), self.queue, exc)
        return True

    async def _release(self, batch: list[Lease]) -> None:
        """Give a batch that could not be written back to the queue, at once."""
        results = await asyncio.gather(*map(self.broker.release, batch), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:  # unsettled leases come back after the lease anyway
            log.warning("could not release %d leases of %s: %r", len(failed), self.queue, failed[0])

    async def _expire_loop(self) -> None:
        while True:
            before = self.clock.now() - self.retention
            try:
                deleted = await self.archive.expire(before)
            except Exception as exc:  # the next round tries again
                log.warning("archive retention failed: %r", exc)
            else:
                if deleted:
                    log.info("archive retention deleted %d objects", deleted)
            await self.clock.sleep(self.expire_every)
