"""The local shape's trigger: `hookhub run` consumes each push subscription's queue itself.

One `SubscriptionWorker` per subscription, each with its own broker consumer, so a slow or
failing subscriber only ever fills its own `max_in_flight` slots and never delays another.
A delivery is settled on the broker only after `FanOut.attempt` has logged its outcome:
delivered or dead → ack; retry → rescheduled (durably) after the backoff; 410 → released and
the worker stops, leaving the events in the queue until the subscription is resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

from hookhub.broker.base import Broker, Consumer, Delivery
from hookhub.config import SubscriptionConfig
from hookhub.fanout import FanOut
from hookhub.metrics import Metrics
from hookhub.store.base import Store, StoreUnavailable, SubscriptionState

log = logging.getLogger(__name__)

LEASE_MARGIN_SECONDS = 10.0  # a delivery's lease outlives its HTTP timeout by this much
STORE_RETRY_SECONDS = (1.0, 5.0)  # pause before handing back a delivery whose outcome could not be logged
STATE_POLL_SECONDS = 2.0  # how soon a pause or resume made by another process takes effect
PREFETCH_PER_SLOT = 2  # leased deliveries per max_in_flight slot


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


class SubscriptionWorker:
    """Delivers one subscription's queue with its own concurrency and rate limits."""

    def __init__(
        self, name: str, sub: SubscriptionConfig, queue: str, broker: Broker, fanout: FanOut
    ) -> None:
        self.name = name
        self.sub = sub
        self.queue = queue
        self.broker = broker
        self.fanout = fanout
        self.limiter = RateLimiter(sub.rate_limit) if sub.rate_limit else None
        self.http_slots = asyncio.Semaphore(sub.max_in_flight)
        self._consumer: Consumer | None = None
        self._stopping = False
        self.on_disabled: asyncio.Event = asyncio.Event()

    @property
    def running(self) -> bool:
        return self._consumer is not None

    async def start(self) -> None:
        self._stopping = False
        self.on_disabled.clear()
        self._consumer = await self.broker.consume(
            self.queue,
            self._handle,
            # more leased than in flight: while some deliveries' outcomes are being logged and
            # acked, the next ones are already posting (the semaphore keeps POSTs to max_in_flight)
            prefetch=self.sub.max_in_flight * PREFETCH_PER_SLOT,
            lease=self.sub.timeout + LEASE_MARGIN_SECONDS,
        )

    async def stop(self) -> None:
        self._stopping = True
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.cancel()

    async def _handle(self, delivery: Delivery) -> None:
        if self._stopping:
            await self.broker.release(delivery)
            return
        if self.limiter is not None:
            await self.limiter.acquire()
        try:
            outcome = await self.fanout.attempt(
                self.name, self.sub, delivery.event, delivery.attempt, self.http_slots
            )
        except StoreUnavailable as exc:
            # the attempt happened but its outcome is not durable: hand the event back, later
            log.warning(
                "%s: could not log a delivery outcome (%s); the event will be retried", self.name, exc
            )
            await asyncio.sleep(random.uniform(*STORE_RETRY_SECONDS))
            await self.broker.release(delivery)
            return
        decision = outcome.decision
        if decision.outcome in ("delivered", "dead"):
            await self.broker.ack(delivery)
        elif decision.outcome == "retry":
            await self.broker.retry(delivery, decision.delay or 0.0)
        else:  # disabled: the event waits in the queue for a resume
            await self.broker.release(delivery)
            self._stopping = True
            self.on_disabled.set()


class Dispatcher:
    """Runs a worker per active push subscription and follows pause/resume/disable states."""

    def __init__(
        self,
        subscriptions: dict[str, SubscriptionConfig],
        queue_for: dict[str, str],
        broker: Broker,
        store: Store,
        fanout: FanOut,
        metrics: Metrics,
    ) -> None:
        self.workers = {
            name: SubscriptionWorker(name, sub, queue_for[name], broker, fanout)
            for name, sub in subscriptions.items()
            if sub.mode == "push"
        }
        self.store = store
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
        await asyncio.gather(*(w.stop() for w in self.workers.values()))

    async def sync_states(self) -> None:
        """Start workers for active subscriptions and stop the paused or disabled ones."""
        async with self._lock:
            try:
                states = await self.store.subscription_states()
            except StoreUnavailable as exc:
                log.warning("dispatcher cannot read subscription states: %s", exc)
                return
            for name, worker in self.workers.items():
                active = states.get(name, SubscriptionState.ACTIVE) is SubscriptionState.ACTIVE
                if worker.on_disabled.is_set() and worker.running:
                    await worker.stop()
                if active and not worker.running:
                    await worker.start()
                elif not active and worker.running:
                    await worker.stop()
                self.metrics.subscription_active.labels(name).set(1 if worker.running else 0)

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
