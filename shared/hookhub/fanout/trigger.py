"""The Knative shape's trigger: a subscription's RabbitmqSource POSTs each event to `fanout`.

The source acks the AMQP message when the function answers 2xx, so the function's "ack" is its
answer, and putting an event back means scheduling a durable copy first. The source knows
nothing of attempts or not-before times, so both come from the attempt log (the same store the
dispatcher writes): the attempt number is one more than the attempts recorded, and an event
that arrives before its retry is due (RabbitMQ's delay tiers are coarse) goes back for the rest
of its wait instead of being attempted early.
"""

from __future__ import annotations

from hookhub.broker.base import Broker
from hookhub.config import SubscriptionConfig
from hookhub.events import Event
from hookhub.fanout.attempts import Attempts, Step, Target
from hookhub.fanout.sender import delivery_id
from hookhub.store.base import AttemptLog, SubscriptionState, SubscriptionStates


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
    """Handles one pushed event for one subscription through the shared decision path."""

    def __init__(
        self,
        push: dict[str, SubscriptionConfig],
        broker: Broker,
        queue_for: dict[str, str],
        attempt_log: AttemptLog,
        states: SubscriptionStates,
        attempts: Attempts,
    ) -> None:
        self.push = push
        self.broker = broker
        self.queue_for = queue_for
        self.attempt_log = attempt_log
        self.states = states
        self.attempts = attempts

    def knows(self, name: str) -> bool:
        return name in self.push

    async def handle(self, name: str, event: Event) -> Step:
        """Raises `StoreUnavailable` / `BrokerUnavailable`: answer 5xx so the source redelivers."""
        sub = self.push[name]
        state = (await self.states.all()).get(name, SubscriptionState.ACTIVE)
        known = await self.attempt_log.delivery_state(delivery_id(name, event))
        held = TriggeredEvent(
            self.broker, self.queue_for[name], event, known.attempts + 1, known.next_attempt_at
        )
        active = state is SubscriptionState.ACTIVE
        return await self.attempts.handle(Target(name, sub, lambda: active), held)
