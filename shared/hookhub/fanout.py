"""One delivery attempt, start to durable outcome: the core both fan-out paths share.

`hookhub run`'s dispatcher (broker consumer) and the Knative `fanout` function (HTTP trigger)
each get one event for one subscription; `FanOut.attempt` POSTs it, decides what the answer
means (delivered, retry at T, dead letter, subscription disabled), logs the attempt durably
and returns the decision. What to do with the broker message is the caller's part.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from hookhub.config import SubscriptionConfig
from hookhub.delivery import (
    AttemptResult,
    Decision,
    Deliverer,
    attempt_record,
    dead_letter,
    decide,
    delivery_id,
)
from hookhub.events import Event
from hookhub.metrics import Metrics
from hookhub.store.base import Store, SubscriptionState

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AttemptOutcome:
    decision: Decision
    result: AttemptResult
    delivery_id: str


class FanOut:
    def __init__(self, store: Store, deliverer: Deliverer, metrics: Metrics) -> None:
        self.store = store
        self.deliverer = deliverer
        self.metrics = metrics

    async def attempt(
        self,
        name: str,
        sub: SubscriptionConfig,
        event: Event,
        attempt: int,
        http_slots: asyncio.Semaphore | None = None,
    ) -> AttemptOutcome:
        """POST once, log the attempt (and dead letter) durably, disable on 410.

        `http_slots` bounds the concurrent POSTs (the subscription's `max_in_flight`) and is held
        for the HTTP exchange only: logging the outcome needs no slot of the subscriber's, so
        the next POST starts while this one's log write is still committing.

        Raises `StoreUnavailable` when the outcome cannot be made durable: the caller must then
        leave the broker message unsettled, so the event is tried again later.
        """
        did = delivery_id(name, event)
        started = time.time()
        if http_slots is None:
            result = await self.deliverer.post(name, sub, event, attempt=attempt, delivery_id=did)
        else:
            async with http_slots:
                result = await self.deliverer.post(name, sub, event, attempt=attempt, delivery_id=did)
        decision = decide(result, attempt, sub)
        dead = dead_letter(name, event, did, attempt, result) if decision.outcome == "dead" else None
        await self.store.record_attempt(
            attempt_record(name, event, did, attempt, result, decision.outcome, started), dead
        )
        if decision.outcome == "disabled":
            log.warning("subscription %s disabled: its endpoint answered 410 Gone", name)
            await self.store.set_subscription_state(
                name, SubscriptionState.DISABLED, "endpoint answered 410 Gone"
            )
        self.metrics.deliveries.labels(name, decision.outcome).inc()
        self.metrics.delivery_latency.labels(name).observe(result.latency_ms / 1000)
        if dead is not None:
            self.metrics.dead_letters.labels(name).inc()
        return AttemptOutcome(decision, result, did)

    async def record_dead_letter(self, name: str, event: Event, attempt: int, reason: str) -> None:
        """A dead letter the event source gave up on (Knative's own dead-letter sink)."""
        did = delivery_id(name, event)
        result = AttemptResult(status=None, latency_ms=0.0, error=reason, retry_after=None)
        await self.store.record_attempt(
            attempt_record(name, event, did, attempt, result, "dead", time.time()),
            dead_letter(name, event, did, attempt, result),
        )
        self.metrics.dead_letters.labels(name).inc()
