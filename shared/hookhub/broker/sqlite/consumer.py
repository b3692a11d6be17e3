"""The SQLite broker's consume side: one `SQLiteConsumer` per `consume` call.

It leases due rows up to its free prefetch slots, renews the leases it holds every third of the
lease time until they are settled (so a handler may wait for a rate limit or a free slot as long
as it likes without its message being handed out twice), and moves rows that are not events to
the dead queue. It wakes at once when this process writes into its queue, and otherwise polls
(`POLL_MIN`-`POLL_MAX`) for other processes' writes, or sleeps until the next scheduled row is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING

from hookhub.broker.base import (
    BrokerUnavailable,
    Consumer,
    HandlerTasks,
    Lease,
    LeaseHandler,
    PoisonMessage,
    Receipt,
    event_from_message,
)
from hookhub.broker.sqlite.writer import DeadOp, LeaseOp, ReleaseOp, RenewOp, Row
from hookhub.events import Event

if TYPE_CHECKING:
    from hookhub.broker.sqlite.broker import SQLiteBroker

log = logging.getLogger(__name__)

POLL_MIN = 0.05  # idle polling for other processes' writes backs off from here...
POLL_MAX = 0.2  # ...to here; this process's own writes wake a consumer at once
ERROR_BACKOFF = 1.0
RENEW_FRACTION = 1 / 3  # renew held leases this often (a fraction of the lease time)


class SQLiteReceipt(Receipt):
    __slots__ = ("consumer", "seq", "token")

    def __init__(self, consumer: SQLiteConsumer, seq: int, token: int) -> None:
        super().__init__()
        self.consumer = consumer
        self.seq = seq
        self.token = token  # the row's lease_id while the lease is ours

    def unclaim(self) -> None:
        """The settle write failed: the lease is still the handler's to settle."""
        self.settled = False
        self.consumer.unsettle(self)


def claim(lease: Lease) -> SQLiteReceipt | None:
    """Mark the lease settled and free its prefetch slot at once (the row stays leased until
    the write commits, so no lease can pick it up twice); None if it was settled already."""
    receipt = lease.receipt
    if not isinstance(receipt, SQLiteReceipt):
        raise TypeError(f"not a lease of the SQLite broker: {receipt!r}")
    if receipt.settled:
        log.debug("event %s from %s already settled", lease.event.id, lease.queue)
        return None
    receipt.settled = True
    receipt.consumer.settle(receipt)
    return receipt


def decode(headers: bytes, body: bytes) -> Event:
    try:
        table = json.loads(headers)
    except ValueError as exc:  # not JSON, or not UTF-8
        raise PoisonMessage(f"headers are not a JSON object: {exc}") from exc
    return event_from_message(table, body)


class SQLiteConsumer(Consumer):
    """Leases due rows of one queue into at most `prefetch` concurrent handler tasks."""

    def __init__(
        self, broker: SQLiteBroker, queue: str, handler: LeaseHandler, prefetch: int, lease: float
    ) -> None:
        self.queue = queue
        self._broker = broker
        self._prefetch = prefetch
        self._lease = lease
        self._tasks = HandlerTasks(queue, handler, broker.release)
        self._unsettled: set[SQLiteReceipt] = set()
        self._wake = asyncio.Event()  # this process wrote into the queue
        self._slot = asyncio.Event()  # a prefetch slot came free
        self._cancelled = False
        self._runners: list[asyncio.Task[None]] = []

    @property
    def in_flight(self) -> int:
        """Leases handed out and not settled yet."""
        return len(self._unsettled)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._runners = [
            loop.create_task(self._run(), name=f"hookhub-consume-{self.queue}"),
            loop.create_task(self._renew(), name=f"hookhub-renew-{self.queue}"),
        ]

    def wake(self) -> None:
        self._wake.set()

    def settle(self, receipt: SQLiteReceipt) -> None:
        if receipt in self._unsettled:
            self._unsettled.discard(receipt)
            self._slot.set()

    def unsettle(self, receipt: SQLiteReceipt) -> None:
        if not self._cancelled:
            self._unsettled.add(receipt)

    async def _run(self) -> None:
        backoff = POLL_MIN
        queue = self.queue
        while not self._cancelled:
            free = self._prefetch - len(self._unsettled)
            if free <= 0:
                self._slot.clear()
                await self._slot.wait()
                continue
            self._wake.clear()  # before the lease: a write that lands after it wakes us again
            try:
                rows, token, next_due = await self._broker.submit(LeaseOp(queue, free, self._lease))
            except Exception as exc:  # BrokerUnavailable mostly; never let the loop die silently
                log.warning("cannot lease from %s (retrying in %.0fs): %r", queue, ERROR_BACKOFF, exc)
                await _wait(self._wake, ERROR_BACKOFF)
                continue
            if self._cancelled:  # leased after cancel: give them straight back
                if rows:
                    with contextlib.suppress(BrokerUnavailable):
                        await self._broker.submit(ReleaseOp(queue, [(row[0], token) for row in rows]))
                return
            for row in rows:
                self._deliver(row, token)
            if len(rows) >= free:  # probably more due: lease again as soon as slots allow
                backoff = POLL_MIN
                continue
            timeout = backoff
            if next_due is not None:
                timeout = min(timeout, max(next_due - time.time(), 0.001))
            woken = await _wait(self._wake, timeout)
            backoff = POLL_MIN if woken or rows else min(backoff * 2, POLL_MAX)

    async def _renew(self) -> None:
        """Keep the held leases alive until settled: `lease` only bounds how long a message
        stays hidden after this process dies."""
        while not self._cancelled:
            await asyncio.sleep(self._lease * RENEW_FRACTION)
            held = [(r.seq, r.token) for r in self._unsettled]
            if not held or self._cancelled:
                continue
            try:
                kept = await self._broker.submit(RenewOp(self.queue, held, self._lease))
            except Exception as exc:  # the next round tries again; the lease has time left
                log.warning("cannot renew %d leases of %s: %r", len(held), self.queue, exc)
                continue
            if kept < len(held):
                log.debug(
                    "%d of %d leases of %s were settled or lost", len(held) - kept, len(held), self.queue
                )

    def _deliver(self, row: Row, token: int) -> None:
        seq, headers, body, attempts, lease_id = row
        try:
            event = decode(headers, body)
        except PoisonMessage as exc:
            self._tasks.spawn(self._to_dead(seq, token, str(exc)))
            return
        receipt = SQLiteReceipt(self, seq, token)
        self._unsettled.add(receipt)
        lease = Lease(event, self.queue, attempts + 1, lease_id is not None, receipt)
        self._tasks.spawn(self._tasks.run(lease))

    async def _to_dead(self, seq: int, token: int, reason: str) -> None:
        dead = self._broker.topology.dead_queue
        try:
            moved = await self._broker.submit(DeadOp(seq, token, dead, reason))
        except BrokerUnavailable as exc:
            log.warning(
                "could not move message %s of %s to %s (back after its lease): %s", seq, self.queue, dead, exc
            )
            return
        if moved:
            log.warning("message %s in %s is not an event (%s): moved to %s", seq, self.queue, reason, dead)

    async def cancel(self, grace: float = 0.0) -> None:
        if self._cancelled:
            return
        self._cancelled = True
        self._wake.set()
        self._slot.set()
        for renewer in self._runners[1:]:  # the leaser ends at its next turn
            renewer.cancel()
        if self._runners:
            await asyncio.wait(self._runners)
        await self._tasks.wait(grace)
        leftovers = [r for r in self._unsettled if not r.settled]
        self._unsettled.clear()
        for receipt in leftovers:
            receipt.settled = True  # a late ack/retry/release of it is now a no-op
        if leftovers:
            try:
                await self._broker.submit(ReleaseOp(self.queue, [(r.seq, r.token) for r in leftovers]))
            except BrokerUnavailable as exc:
                log.warning(
                    "could not release %d leases of %s (back after their lease): %s",
                    len(leftovers),
                    self.queue,
                    exc,
                )
        await self._tasks.stop()
        self._broker.forget(self)

    async def _halt(self) -> None:
        """Stop as a killed process would: no release, no more renewals (tests use this to show
        that the leases come back after `lease`)."""
        self._cancelled = True
        for runner in self._runners:
            runner.cancel()
        if self._runners:
            await asyncio.wait(self._runners)
        await self._tasks.stop()
        self._broker.forget(self)


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    """Wait for `event` up to `timeout` seconds; True if it was set."""
    if event.is_set():
        return True
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True
