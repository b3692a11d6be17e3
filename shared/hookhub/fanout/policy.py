"""What an attempt's result means: the fan-out rules of SPEC.md as one pure function.

`decide` maps an `AttemptResult` to a `Verdict` (and a delay for retries); it reads no clock but
the injected random source, so every rule is unit-tested without a network or a broker.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from hookhub.config import Backoff, SubscriptionConfig
from hookhub.fanout.sender import AttemptResult

RETRY_AFTER_MAX_SECONDS = 3600.0


class Verdict(enum.Enum):
    DELIVERED = "delivered"  # 2xx: done
    RETRY = "retry"  # try again after `Decision.delay`
    DEAD = "dead"  # out of attempts, or a 4xx that retrying will not fix: a dead letter
    PARKED = "parked"  # paused, or disabled by a 410: the event waits in its queue


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    delay: float = 0.0  # seconds before the next attempt (RETRY only)
    disable: bool = False  # the subscriber answered 410 Gone: disable the subscription


def backoff_delay(backoff: Backoff, attempt: int, rng: Callable[[], float] = random.random) -> float:
    """Delay after failed attempt `attempt` (1-based): exponential, capped, then jittered down.

    `jitter` is the fraction of the delay that is random (1.0 = full jitter), which spreads the
    retries of many deliveries that failed together instead of firing them in lockstep.
    """
    try:
        delay = min(backoff.max, backoff.initial * backoff.multiplier ** (attempt - 1))
    except OverflowError:
        delay = backoff.max
    if math.isnan(delay):  # 0 * inf
        delay = backoff.max
    return delay * (1.0 - backoff.jitter * rng())


def decide(
    result: AttemptResult,
    attempt: int,
    sub: SubscriptionConfig,
    rng: Callable[[], float] = random.random,
) -> Decision:
    """What follows attempt number `attempt` (1-based), per the SPEC's fan-out rules."""
    status = result.status
    if status is not None and 200 <= status < 300:
        return Decision(Verdict.DELIVERED)
    if status == 410:  # the subscriber says it is gone: stop, keep the events queued
        return Decision(Verdict.PARKED, disable=True)
    # Retryable: no answer (timeout, connection error), 429, 5xx, and 3xx: redirects are not
    # followed, so a redirect is a subscriber misconfiguration that may be fixed; treat it like a
    # server error rather than losing the event. Any other 4xx will not get better by retrying.
    retryable = status is None or status == 429 or not 400 <= status < 500
    if not retryable or attempt >= sub.max_attempts:
        return Decision(Verdict.DEAD)
    if result.retry_after is not None:
        # the subscriber knows when it can take more: wait that long, even beyond our own
        # backoff.max, but never longer than RETRY_AFTER_MAX_SECONDS (a bogus far-off date)
        return Decision(Verdict.RETRY, min(result.retry_after, max(sub.backoff.max, RETRY_AFTER_MAX_SECONDS)))
    return Decision(Verdict.RETRY, backoff_delay(sub.backoff, attempt, rng))
