"""The one decision path of the fan-out: attempt result → durable record → broker action.

Both deployment shapes come through here: `hookhub run`'s dispatcher with a broker lease, and the
Knative `fanout` function with an event its RabbitmqSource POSTed. Each hands over a `Held` event,
the narrow interface this module defines for "a queued event I may ack or put back", so the
verdict → broker action mapping exists once:

| verdict                      | broker action                                               |
|------------------------------|-------------------------------------------------------------|
| delivered, dead              | ack (the attempt log, and the dead letter, are durable first) |
| retry after d seconds        | requeue as attempt n+1, due after d                         |
| parked (a 410 was answered)  | requeue as attempt n+1, due after the shape's park delay     |
| parked (paused, stopping)    | requeue as attempt n (nothing was sent), park delay          |
| not yet due (came early)     | requeue as attempt n, due at its not-before time (a wait     |
|                              | under `EARLY_WAIT_SECONDS` is waited out in-process instead)  |

The park delay is the only thing the shapes set differently: the dispatcher stops consuming a
parked subscription, so its events can wait in the queue due at once (0); a RabbitmqSource keeps
pushing whatever is due, so the Knative function defers a parked event by `PARK_RECHECK_SECONDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from hookhub.clock import SYSTEM_CLOCK, Clock
from hookhub.config import SubscriptionConfig
from hookhub.events import Event
from hookhub.fanout.health import Health
from hookhub.fanout.policy import Decision, Verdict, decide
from hookhub.fanout.sender import AttemptResult, Sender, delivery_id
from hookhub.metrics import Metrics
from hookhub.store.base import AttemptLog, AttemptRecord, DeadLetter, SubscriptionState, SubscriptionStates

log = logging.getLogger(__name__)

PARK_RECHECK_SECONDS = 60.0  # Knative: how often a parked event comes back to look at its state
EARLY_WAIT_SECONDS = 1.0  # an event this close to its due time waits in-process, not in the broker


class Held(Protocol):
    """A queued event this process holds until it acks it or puts it back."""

    event: Event
    attempt: int  # the number the next POST carries (1 for a fresh event)
    not_before: float | None  # unix time before which it must not be attempted (None: now)

    async def ack(self) -> None:
        """Remove it: its outcome is durable elsewhere."""

    async def requeue(self, attempt: int, delay: float) -> None:
        """Put it back as `attempt`, due after `delay` seconds, durably before letting go."""


def _nothing() -> None:
    pass


@dataclass(slots=True)
class Target:
    """One subscription as the decision path sees it."""

    name: str
    config: SubscriptionConfig
    active: Callable[[], bool]  # re-read right before the POST: a pause lands between events
    slots: asyncio.Semaphore | None = None  # bounds concurrent POSTs (max_in_flight) where set
    # called the moment a 410 disables the subscription, before anything is requeued, so that
    # no other event of this target is POSTed meanwhile (`active` must turn false here)
    disable: Callable[[], None] = _nothing
    # secrets signing besides the current one at a given time (a rotation's overlap)
    extra_secrets: Callable[[float], tuple[str, ...]] = lambda _now: ()


@dataclass(frozen=True, slots=True)
class Step:
    """What happened to one held event: the verdict, and the attempt it was (if one was made)."""

    verdict: Verdict
    attempt: int
    delay: float = 0.0
    result: AttemptResult | None = None  # None: no POST was made (parked, or not yet due)
    disabled: bool = False  # this attempt disabled the subscription (410)


class Attempts:
    """Makes one attempt for a held event and settles it; see the module docstring."""

    def __init__(
        self,
        sender: Sender,
        attempt_log: AttemptLog,
        states: SubscriptionStates,
        metrics: Metrics,
        *,
        park_delay: float,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.sender = sender
        self.attempt_log = attempt_log
        self.states = states
        self.metrics = metrics
        self.park_delay = park_delay
        self.clock = clock
        self.health = Health(states)

    async def handle(self, target: Target, held: Held) -> Step:
        """Attempt `held` once (unless parked or early), record the outcome, then settle it.

        Raises `StoreUnavailable` (nothing settled: the caller hands the event back later) or
        `BrokerUnavailable` (the outcome is recorded but the broker did not take the action).
        """
        early = 0.0 if held.not_before is None else held.not_before - self.clock.now()
        if early > EARLY_WAIT_SECONDS:
            await held.requeue(held.attempt, early)
            return Step(Verdict.RETRY, held.attempt, early)
        if early > 0:  # a requeue this short would come straight back: wait it out here
            await self.clock.sleep(early)
        if not target.active():
            return await self._park(held)
        did = delivery_id(target.name, held.event)
        # the slot is held for the POST only: recording the outcome needs none of the subscriber's
        async with target.slots or contextlib.nullcontext():
            if not target.active():  # a stop or pause came while this event waited for a slot
                return await self._park(held)
            started = self.clock.now()
            result = await self.sender.post(
                target.name,
                target.config,
                held.event,
                attempt=held.attempt,
                delivery_id=did,
                extra_secrets=target.extra_secrets(started),
            )
        return await self._settle(target, held, did, started, result)

    async def _settle(
        self, target: Target, held: Held, did: str, started: float, result: AttemptResult
    ) -> Step:
        decision = decide(result, held.attempt, target.config)
        await self._record(target.name, held, did, started, result, decision)
        self.metrics.deliveries.labels(target.name, decision.verdict.value).inc()
        self.metrics.delivery_latency.labels(target.name).observe(result.latency_ms / 1000)
        verdict = decision.verdict
        disabled = decision.disable
        if disabled:
            await self._disable(target, held.event, "its endpoint answered 410 Gone")
        elif verdict is Verdict.DELIVERED:
            await self.health.succeeded(target.name)
        else:
            since = await self.health.failed(target.name, started)
            if started - since >= target.config.disable_after:
                since = await self.health.confirm(target.name, started)
            if started - since >= target.config.disable_after:
                disabled = True
                self.metrics.auto_disabled.labels(target.name).inc()
                await self._disable(
                    target,
                    held.event,
                    f"failing without a success since {_iso(since)} (disable_after "
                    f"{target.config.disable_after:g}s)",
                )
        if verdict in (Verdict.DELIVERED, Verdict.DEAD):
            await held.ack()
        elif verdict is Verdict.RETRY:
            await held.requeue(held.attempt + 1, decision.delay)
        else:
            await held.requeue(held.attempt + 1, self.park_delay)
        return Step(verdict, held.attempt, decision.delay, result, disabled)

    async def _disable(self, target: Target, event: Event, why: str) -> None:
        """Stop this target at once, then make it durable: its events wait in its queue."""
        target.disable()
        await self.states.set(target.name, SubscriptionState.DISABLED, why)
        self.health.forget(target.name)
        log.warning(
            "subscription %s disabled: %s; its events wait in its queue until it is resumed",
            target.name,
            why,
            extra=_context(target.name, event, state="disabled"),
        )

    async def _park(self, held: Held) -> Step:
        """Nothing was sent: back to the queue with the same attempt number."""
        await held.requeue(held.attempt, self.park_delay)
        return Step(Verdict.PARKED, held.attempt, self.park_delay)

    async def _record(
        self, name: str, held: Held, did: str, started: float, result: AttemptResult, decision: Decision
    ) -> None:
        event = held.event
        record = AttemptRecord.of(
            name,
            did,
            event,
            attempt=held.attempt,
            attempted_at=started,
            status_code=result.status,
            latency_ms=result.latency_ms,
            error=result.error,
            verdict=decision.verdict.value,
            next_attempt_at=started + decision.delay if decision.verdict is Verdict.RETRY else None,
        )
        dead = DeadLetter.after(record, event, self.clock.now()) if decision.verdict is Verdict.DEAD else None
        await self.attempt_log.record(record, dead)
        if dead is not None:
            self.metrics.dead_letters.labels(name).inc()
            log.warning(
                "dead letter: event %s to subscription %s after %d attempts (%s)",
                event.id,
                name,
                held.attempt,
                result.error or f"HTTP {result.status}",
                extra=_context(name, event, attempts=held.attempt, status=result.status),
            )


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _context(subscription: str, event: Event, **more: object) -> dict[str, object]:
    """The `extra` of a fan-out log line: what an operator greps or filters on."""
    return {
        "subscription": subscription,
        "event_id": event.id,
        "correlation_id": event.correlationid,
        "event_type": event.type,
        **more,
    }
