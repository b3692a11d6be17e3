"""The local shape's trigger: `hookhub run` consumes each push subscription's queue itself.

One `SubscriptionWorker` per subscription, each with its own broker consumer, so a slow or
failing subscriber only ever fills its own `max_in_flight` slots and never delays another. What
an attempt means and what the broker does about it is decided in `attempts` (shared with the
Knative function); this module only leases, paces, and starts and stops workers.

Stopping (shutdown, pause, a 410) is graceful: the worker stops leasing, POSTs already under way
finish within their timeout and are recorded and settled, and events still waiting for their turn
go back to the queue untouched, so a restart neither repeats nor loses one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable

from hookhub.broker.base import Broker, BrokerUnavailable, Consumer, Lease
from hookhub.config import SubscriptionConfig
from hookhub.events import Event
from hookhub.fanout.attempts import Attempts, Target
from hookhub.metrics import Metrics
from hookhub.store.base import StoreUnavailable, SubscriptionState, SubscriptionStates
from hookhub.subscriptions import Registry, Subscription

log = logging.getLogger(__name__)

LEASE_MARGIN_SECONDS = 10.0  # a lease outlives its HTTP timeout by this much; also the stop grace
STORE_RETRY_SECONDS = (1.0, 5.0)  # pause before handing back an event whose outcome could not be logged
STATE_POLL_SECONDS = 2.0  # how soon a pause or resume made by another process takes effect
PREFETCH_PER_SLOT = 2  # leased events per max_in_flight slot


class RateLimiter:
    """Token bucket: at most `rate` acquisitions a second, bursts up to one second's worth."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:  # waiters queue in order instead of racing for tokens
            while True:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= 1.0:
                    self.tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self.tokens) / self.rate)


def share_of(sub: SubscriptionConfig, processes: int) -> SubscriptionConfig:
    """One process's part of a subscription's limits when `processes` deliver it side by side
    (`hookhub run --workers N`): the subscriber sees at most `max_in_flight` POSTs and
    `rate_limit` per second in all, as it would from one process."""
    if processes <= 1:
        return sub
    update: dict[str, object] = {"max_in_flight": math.ceil(sub.max_in_flight / processes)}
    if sub.rate_limit:
        update["rate_limit"] = sub.rate_limit / processes
    return sub.model_copy(update=update)


class LeasedEvent:
    """A broker lease as the decision path's `Held`."""

    __slots__ = ("attempt", "broker", "event", "lease", "not_before")

    def __init__(self, broker: Broker, lease: Lease) -> None:
        self.broker = broker
        self.lease = lease
        self.event: Event = lease.event
        self.attempt = lease.attempt
        self.not_before: float | None = None  # the broker hands nothing out before its time

    async def ack(self) -> None:
        await self.broker.ack(self.lease)

    async def requeue(self, attempt: int, delay: float) -> None:
        if attempt == self.lease.attempt and delay <= 0:
            await self.broker.release(self.lease)
        elif attempt == self.lease.attempt + 1:
            await self.broker.retry(self.lease, delay)
        else:  # the durable copy first, then let go of the original: a crash can only duplicate
            await self.broker.schedule(self.lease.queue, self.event, attempt=attempt, delay=delay)
            await self.broker.ack(self.lease)


class SubscriptionWorker:
    """Delivers one subscription's queue with its own concurrency and rate limits."""

    def __init__(
        self,
        name: str,
        sub: SubscriptionConfig,
        queue: str,
        broker: Broker,
        attempts: Attempts,
        subscription: Subscription | None = None,
        processes: int = 1,
    ) -> None:
        self.name = name
        self.sub = share_of(sub, processes)
        self.subscription = subscription or Subscription(name, sub, "file")  # what it was built from
        self.queue = queue
        self.broker = broker
        self.attempts = attempts
        self.limiter = RateLimiter(self.sub.rate_limit) if self.sub.rate_limit else None
        self.target = Target(
            name,
            self.sub,
            self._active,
            asyncio.Semaphore(self.sub.max_in_flight),
            self._disable,
            self.subscription.extra_secrets,
        )
        self._consumer: Consumer | None = None
        self._stopping = asyncio.Event()
        self.on_disabled = asyncio.Event()

    @property
    def running(self) -> bool:
        return self._consumer is not None

    @property
    def grace(self) -> float:
        """How long a stop waits for POSTs under way: their timeout, then time to record them."""
        return self.sub.timeout + LEASE_MARGIN_SECONDS

    def _active(self) -> bool:
        return not self._stopping.is_set()

    def _disable(self) -> None:
        """A 410: take no more events from here on; the dispatcher then stops the consumer."""
        self._stopping.set()
        self.on_disabled.set()

    async def start(self) -> None:
        self._stopping.clear()
        self.on_disabled.clear()
        self._consumer = await self.broker.consume(
            self.queue,
            self._handle,
            # more leased than in flight: while some outcomes are being logged and acked, the next
            # events are already posting (the semaphore keeps POSTs to max_in_flight)
            prefetch=self.sub.max_in_flight * PREFETCH_PER_SLOT,
            lease=self.grace,
        )

    async def stop(self) -> None:
        """Stop leasing; let POSTs under way finish and settle; hand back what waits its turn."""
        self._stopping.set()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.cancel(grace=self.grace)

    async def _handle(self, lease: Lease) -> None:
        held = LeasedEvent(self.broker, lease)
        if self.limiter is not None and not await self._wait_for_token():
            await held.requeue(held.attempt, 0.0)  # stopping: back to the queue, untouched
            return
        try:
            await self.attempts.handle(self.target, held)
        except StoreUnavailable as exc:
            # the attempt happened but its outcome is not durable: hand the event back, later
            log.warning("%s: could not log an attempt (%s); the event will be tried again", self.name, exc)
            await asyncio.sleep(random.uniform(*STORE_RETRY_SECONDS))
            await self.broker.release(lease)
        except BrokerUnavailable as exc:
            # recorded, not settled: the broker hands the event out again once it is back
            log.warning("%s: broker did not take the settlement (%s)", self.name, exc)

    async def _wait_for_token(self) -> bool:
        """A rate-limit token, or False when the worker stops first."""
        assert self.limiter is not None
        token = asyncio.ensure_future(self.limiter.acquire())
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait((token, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not token.done():
                token.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await token
        return token.done() and not token.cancelled() and not self._stopping.is_set()


class Dispatcher:
    """Runs a worker per active push subscription and follows the registry (subscriptions created,
    changed or deleted at run time) and the pause/resume/disable states."""

    def __init__(
        self,
        registry: Registry,
        queue_of: Callable[[str], str],
        broker: Broker,
        states: SubscriptionStates,
        attempts: Attempts,
        metrics: Metrics,
        processes: int = 1,
    ) -> None:
        self.registry = registry
        self.processes = processes  # hub processes delivering side by side (see `share_of`)
        self.queue_of = queue_of
        self.broker = broker
        self.attempts = attempts
        self.workers: dict[str, SubscriptionWorker] = {}
        self.states = states
        self.metrics = metrics
        self._watch: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await self.sync_states()
        self._watch = asyncio.get_running_loop().create_task(self._follow_states(), name="hookhub-dispatcher")

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        async with self._lock:
            await asyncio.gather(*(w.stop() for w in self.workers.values()))

    async def sync_states(self) -> None:
        """Follow the registry, then start workers for active subscriptions and stop the paused
        or disabled ones."""
        async with self._lock:
            try:
                states = await self.states.all()
            except StoreUnavailable as exc:
                log.warning("dispatcher cannot read subscription states: %s", exc)
                return
            await self._follow_registry(await self.registry.try_refresh())
            changes = []
            for name, worker in self.workers.items():
                state = states.get(name, SubscriptionState.ACTIVE)
                active = state is SubscriptionState.ACTIVE
                if worker.on_disabled.is_set() and worker.running:
                    changes.append(worker.stop())
                elif active and not worker.running:
                    log.info(
                        "subscription %s: delivering", name, extra={"subscription": name, "state": "active"}
                    )
                    changes.append(worker.start())
                elif not active and worker.running:
                    log.info(
                        "subscription %s: %s, its events wait in its queue",
                        name,
                        state.value,
                        extra={"subscription": name, "state": state.value},
                    )
                    changes.append(worker.stop())
            await asyncio.gather(*changes)
            for name, worker in self.workers.items():
                self.metrics.subscription_active.labels(name).set(1 if worker.running else 0)

    async def _follow_registry(self, subscriptions: dict[str, Subscription]) -> None:
        """Replace the worker of a changed subscription (its old worker stops gracefully first,
        so nothing is lost or repeated) and drop the workers of deleted ones."""
        stopping = []
        for name, worker in list(self.workers.items()):
            sub = subscriptions.get(name)
            if sub is not None and sub.push and sub == worker.subscription:
                continue
            log.info("subscription %s: %s", name, "changed" if sub is not None else "deleted")
            stopping.append(worker.stop())
            del self.workers[name]
            if sub is None:
                with contextlib.suppress(KeyError):
                    self.metrics.subscription_active.remove(name)
        await asyncio.gather(*stopping)
        for name, sub in subscriptions.items():
            if sub.push and name not in self.workers:
                self.workers[name] = SubscriptionWorker(
                    name, sub.config, self.queue_of(name), self.broker, self.attempts, sub, self.processes
                )

    async def _follow_states(self) -> None:
        while True:
            # wake on the poll interval, or at once when a worker was disabled by a 410
            waits = [asyncio.ensure_future(w.on_disabled.wait()) for w in self.workers.values() if w.running]
            try:
                if waits:
                    await asyncio.wait(waits, timeout=STATE_POLL_SECONDS, return_when=asyncio.FIRST_COMPLETED)
                else:
                    await asyncio.sleep(STATE_POLL_SECONDS)
            finally:
                for wait in waits:
                    wait.cancel()
            await self.sync_states()
