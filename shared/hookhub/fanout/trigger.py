"""The Knative shape's trigger: a subscription's RabbitmqSource POSTs each event to `fanout`.

The source acks the AMQP message when the function answers 2xx, so the function's "ack" is its
answer, and putting an event back means scheduling a durable copy first. The source knows
nothing of attempts or not-before times, so both come from the attempt log (the same store the
dispatcher writes): the attempt number is one more than the attempts recorded, and an event
that arrives before its retry is due (RabbitMQ's delay tiers are coarse) goes back for the rest
of its wait instead of being attempted early.
"""

from __future__ import annotations

from collections.abc import Callable

from hookhub.broker.base import Broker
from hookhub.clock import SYSTEM_CLOCK, Clock
from hookhub.events import Event
from hookhub.fanout.attempts import Attempts, Step, Target
from hookhub.fanout.sender import delivery_id
from hookhub.store.base import AttemptLog, SubscriptionState, SubscriptionStates
from hookhub.subscriptions import Registry, Subscription


class TriggeredEvent:
    """An event pushed by the event source, as the decision path's `Held`."""

    __slots__ = ("attempt", "broker", "event", "not_before", "queue")

    def __init__(
        self, broker: Broker, queue: str, event: Event, attempt: int, not_before: float | None
    ) -> None:
        self.broker = broker
        self.queue = queue
        self.event = event
        self.attempt = attempt
        self.not_before = not_before

    async def ack(self) -> None:
        """Nothing to do here: the function's 2xx answer makes the source ack its message."""

    async def requeue(self, attempt: int, delay: float) -> None:
        await self.broker.schedule(self.queue, self.event, attempt=attempt, delay=delay)


class Trigger:
    """Handles one pushed event for one subscription through the shared decision path.

    The registry is re-read at most every `REFRESH_SECONDS`, so a subscription created or
    changed through the admin API reaches a long-lived `fanout` replica without a restart.
    """

    REFRESH_SECONDS = 2.0

    def __init__(
        self,
        registry: Registry,
        broker: Broker,
        queue_of: Callable[[str], str],
        attempt_log: AttemptLog,
        states: SubscriptionStates,
        attempts: Attempts,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.registry = registry
        self.broker = broker
        self.queue_of = queue_of
        self.attempt_log = attempt_log
        self.states = states
        self.attempts = attempts
        self.clock = clock
        self._refreshed_at = float("-inf")

    async def lookup(self, name: str) -> Subscription | None:
        """The push subscription `name`, from a registry at most `REFRESH_SECONDS` old."""
        if self.clock.now() - self._refreshed_at >= self.REFRESH_SECONDS or not self.registry.loaded:
            self._refreshed_at = self.clock.now()
            await self.registry.try_refresh()
        sub = self.registry.current().get(name)
        return sub if sub is not None and sub.push else None

    async def handle(self, sub: Subscription, event: Event) -> Step:
        """Raises `StoreUnavailable` / `BrokerUnavailable`: answer 5xx so the source redelivers."""
        name = sub.name
        state = (await self.states.all()).get(name, SubscriptionState.ACTIVE)
        known = await self.attempt_log.delivery_state(delivery_id(name, event))
        held = TriggeredEvent(
            self.broker, self.queue_of(name), event, known.attempts + 1, known.next_attempt_at
        )
        active = state is SubscriptionState.ACTIVE
        target = Target(name, sub.config, lambda: active, extra_secrets=sub.extra_secrets)
        return await self.attempts.handle(target, held)
