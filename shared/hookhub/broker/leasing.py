"""What the brokers that lease by themselves (in-memory and SQLite) share; RabbitMQ leases on
the server and has a consumer of its own.

A `LeasingConsumer` keeps at most `prefetch` leases unsettled, runs one handler task per lease,
renews the leases it holds until they are settled (so a handler may wait for a rate limit or a
free slot as long as it likes without its message being handed out twice), and on `cancel` gives
back what is left. A subclass says only how it leases due messages (`_lease_due`), renews
(`_renew_held`) and gives leases back (`_give_back`); its broker settles with `LeasedReceipt.claim`.
"""

from __future__ import annotations

import asyncio
import logging
from abc import abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

from hookhub.broker.base import BrokerUnavailable, Consumer, HandlerTasks, Lease, LeaseHandler, Receipt
from hookhub.clock import Clock
from hookhub.events import Event

log = logging.getLogger(__name__)

ERROR_BACKOFF = 1.0  # after a failed lease, try again this much later (or when woken)
RENEW_FRACTION = 1 / 3  # renew held leases this often (a fraction of the lease time)


class LeasedReceipt(Receipt):
    """A lease a `LeasingConsumer` handed out: the message's `seq` and the lease's `token`,
    which a settle must match (a lease lost meanwhile has another token)."""

    __slots__ = ("consumer", "seq", "token")
    broker: ClassVar[str]  # named in the error for a lease of another broker

    def __init__(self, consumer: LeasingConsumer[Any], seq: int, token: int) -> None:
        super().__init__()
        self.consumer = consumer
        self.seq = seq
        self.token = token

    @classmethod
    def claim(cls, lease: Lease, check: Callable[[], None] | None = None) -> Self | None:
        """Mark the lease settled and free its prefetch slot at once; None if it was settled
        already. `check` may raise first (the broker is down), leaving everything as it was.
        The message stays leased until the settle is stored, so no lease can take it twice."""
        receipt = lease.receipt
        if not isinstance(receipt, cls):
            raise TypeError(f"not a lease of the {cls.broker} broker: {receipt!r}")
        if receipt.settled:
            log.debug("event %s from %s already settled", lease.event.id, lease.queue)
            return None
        if check is not None:
            check()
        receipt.settled = True
        receipt.consumer.settle(receipt)
        return receipt

    def unclaim(self) -> None:
        """The settle could not be stored: the lease is still the handler's to settle."""
        self.settled = False
        self.consumer.unsettle(self)


R = TypeVar("R", bound=LeasedReceipt)


class LeaseHost(Protocol):
    """The broker a `LeasingConsumer` belongs to."""

    async def release(self, lease: Lease) -> None: ...

    def forget(self, consumer: Any) -> None:
        """The consumer has stopped: drop it."""


def check_consume(prefetch: int, lease: float) -> None:
    if prefetch < 1 or lease <= 0:
        raise ValueError("prefetch must be at least 1 and lease positive")


async def cancel_all(consumers: Iterable[Consumer]) -> None:
    """A closing broker's consumers: each one's unsettled leases go back before it closes."""
    for consumer in list(consumers):
        await consumer.cancel()


class LeasingConsumer(Consumer, Generic[R]):
    """Leases due messages of one queue into at most `prefetch` concurrent handler tasks.

    It leases at once when woken (`wake`: a write into the queue this process knows of), else
    when the next scheduled message is due, and, with `poll` = (min, max) seconds, at least that
    often (backing off from min to max while idle) to find other processes' writes.
    """

    def __init__(
        self,
        host: LeaseHost,
        queue: str,
        handler: LeaseHandler,
        receipt: type[R],
        *,
        prefetch: int,
        lease: float,
        clock: Clock,
        poll: tuple[float, float] | None = None,
    ) -> None:
        self.queue = queue
        self._host = host
        self._receipt = receipt
        self._prefetch = prefetch
        self._lease = lease
        self._clock = clock
        self._poll = poll
        self._tasks = HandlerTasks(queue, handler, host.release)
        self._unsettled: set[R] = set()
        self._wake = asyncio.Event()  # a write into the queue, or the broker back up
        self._slot = asyncio.Event()  # a prefetch slot came free
        self._cancelled = False
        self._runners: list[asyncio.Task[None]] = []

    @abstractmethod
    async def _lease_due(self, limit: int) -> tuple[int, float | None]:
        """Lease up to `limit` due messages and `_hand_out` them: how many were leased, and when
        (unix time) the next message not yet due will be (None: none scheduled). Raises
        (`BrokerUnavailable`) when the broker cannot be reached."""

    @abstractmethod
    async def _renew_held(self, held: Sequence[R]) -> int:
        """Extend the leases `held` by `_lease` from now: how many were still ours."""

    @abstractmethod
    async def _give_back(self, leftovers: Sequence[R]) -> None:
        """Make the messages of `leftovers` due now (`BrokerUnavailable` if it cannot)."""

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

    def settle(self, receipt: R) -> None:
        if receipt in self._unsettled:
            self._unsettled.discard(receipt)
            self._slot.set()

    def unsettle(self, receipt: R) -> None:
        if not self._cancelled:
            self._unsettled.add(receipt)

    def _hand_out(self, event: Event, seq: int, token: int, attempts: int, redelivered: bool) -> None:
        """Run the handler on a new lease of message `seq` (`attempts`: made so far)."""
        receipt = self._receipt(self, seq, token)
        self._unsettled.add(receipt)
        self._tasks.spawn(self._tasks.run(Lease(event, self.queue, attempts + 1, redelivered, receipt)))

    async def _run(self) -> None:
        backoff = self._poll[0] if self._poll else 0.0
        while not self._cancelled:
            free = self._prefetch - len(self._unsettled)
            if free <= 0:
                self._slot.clear()
                await self._slot.wait()
                continue
            self._wake.clear()  # before the lease: a write that lands after it wakes us again
            try:
                leased, next_due = await self._lease_due(free)
            except Exception as exc:  # BrokerUnavailable mostly; never let the loop die silently
                log.warning("cannot lease from %s (retrying in %.0fs): %r", self.queue, ERROR_BACKOFF, exc)
                await wait_event(self._wake, self._clock, ERROR_BACKOFF)
                continue
            if self._cancelled:
                return
            if leased >= free:  # probably more due: lease again as soon as slots allow
                backoff = self._poll[0] if self._poll else 0.0
                continue
            timeout = backoff if self._poll else None
            if next_due is not None:
                until = max(next_due - self._clock.now(), 0.001)
                timeout = until if timeout is None else min(timeout, until)
            woken = await wait_event(self._wake, self._clock, timeout)
            if self._poll:
                backoff = self._poll[0] if woken or leased else min(backoff * 2, self._poll[1])

    async def _renew(self) -> None:
        """Keep the held leases alive until settled: `lease` only bounds how long a message
        stays hidden after its holder is gone."""
        while not self._cancelled:
            await self._clock.sleep(self._lease * RENEW_FRACTION)
            held = list(self._unsettled)
            if not held or self._cancelled:
                continue
            try:
                kept = await self._renew_held(held)
            except Exception as exc:  # the next round tries again; the lease has time left
                log.warning("cannot renew %d leases of %s: %r", len(held), self.queue, exc)
                continue
            if kept < len(held):
                log.debug(
                    "%d of %d leases of %s were settled or lost", len(held) - kept, len(held), self.queue
                )

    async def cancel(self, grace: float = 0.0) -> None:
        if self._cancelled:
            return
        self._cancelled = True
        self._wake.set()
        self._slot.set()
        for renewer in self._runners[1:]:  # the leaser ends at its next turn, giving back a late lease
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
                await self._give_back(leftovers)
            except BrokerUnavailable as exc:
                log.warning(
                    "could not release %d leases of %s (back after their lease): %s",
                    len(leftovers),
                    self.queue,
                    exc,
                )
        await self._tasks.stop()
        self._host.forget(self)

    async def _halt(self) -> None:
        """Stop as a killed process would: no release, no more renewals (tests use this to show
        that the leases come back after `lease`)."""
        self._cancelled = True
        for runner in self._runners:
            runner.cancel()
        if self._runners:
            await asyncio.wait(self._runners)
        await self._tasks.stop()
        self._host.forget(self)


async def wait_event(event: asyncio.Event, clock: Clock, timeout: float | None) -> bool:
    """Wait until `event` is set or `timeout` seconds of `clock` have passed (None: no
    timeout); True if it was set. On `clock`, so a test's `ManualClock` drives the timeout."""
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    if timeout is None:
        await waiter
        return True
    sleeper = asyncio.ensure_future(clock.sleep(timeout))
    try:
        await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        sleeper.cancel()
    return event.is_set()
