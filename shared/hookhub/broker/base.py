"""The broker interface: what ingest needs (durable publish) and the topology both brokers share.

Topology, the same on RabbitMQ and the embedded broker:
- every event is published to the topic exchange `<ns>.events` with its CloudEvents `type`
  as routing key (`<ns>` is the namespace, `hookhub` by default);
- each subscription has a queue `<ns>.sub.<name>` bound with its `types` patterns
  (AMQP topic syntax: `*` one word, `#` zero or more);
- an event no subscription matches lands in `<ns>.unrouted` (RabbitMQ: alternate exchange),
  so an accepted event is always in some durable queue.
"""

from __future__ import annotations

import asyncio
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from hookhub.events import Event

log = logging.getLogger(__name__)

# Attributes travel as `ce-<name>` message headers: the prefix eventing-rabbitmq's RabbitmqSource
# recognises as a binary-mode CloudEvent, so on Knative the fan-out function receives the event
# with its own id, type and source (with `cloudEvents:` it would get a wrapped source event).
HEADER_PREFIX = "ce-"
# Scheduling headers, next to (never inside) the CloudEvents ones, so `event_from_message` still
# rebuilds the same Event. Integers because pika can neither encode a float nor decode one exactly.
ATTEMPT_HEADER = "hookhub-attempt"  # absent on a freshly published event: attempt 1
NOT_BEFORE_HEADER = "hookhub-not-before-ms"  # unix time in milliseconds; absent: due at once
# Why a message was moved to `Topology.dead_queue` (a header on RabbitMQ, a column on SQLite).
DEAD_REASON_HEADER = "hookhub-dead-reason"


@dataclass(frozen=True, slots=True)
class Topology:
    """Exchange and queue names, all under one namespace so that several hubs (or test runs)
    can share a RabbitMQ vhost or an SQLite file without seeing each other's events."""

    namespace: str = "hookhub"

    @property
    def exchange(self) -> str:
        return f"{self.namespace}.events"

    @property
    def unrouted_exchange(self) -> str:
        return f"{self.namespace}.unrouted"

    @property
    def unrouted_queue(self) -> str:
        return f"{self.namespace}.unrouted"

    @property
    def dead_queue(self) -> str:
        """Messages a consumer found that are not events (poison): kept here, never looped."""
        return f"{self.namespace}.dead"

    @property
    def archive_queue(self) -> str:
        """Every event (bound to `#`), consumed by the archiver."""
        return f"{self.namespace}.archive"

    def subscription_queue(self, name: str) -> str:
        return f"{self.namespace}.sub.{name}"


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """One queue as the broker sees it now (for the admin API)."""

    name: str
    depth: int  # waiting, not leased (in-memory and SQLite: scheduled retries too; RabbitMQ: ready)
    consumers: int | None  # None where the broker cannot tell
    in_flight: int | None  # leased and not settled yet; None where the broker cannot tell


class BrokerUnavailable(Exception):
    """The broker did not take the messages: not connected, refused (nack), or not sent at all."""


class PublishUnconfirmed(BrokerUnavailable):
    """The messages were sent but not confirmed in time: they may still become durable.

    `confirmed` resolves later to True (the broker confirmed them after all) or False (nacked,
    or the connection was lost first). Ingest must not release their claims as if the publish had
    failed, or a provider's retry would publish the event a second time.
    """

    def __init__(self, message: str, confirmed: asyncio.Future[bool]) -> None:
        super().__init__(message)
        self.confirmed = confirmed


class PoisonMessage(Exception):
    """A queued message that is not a valid event (bad headers or attributes)."""


@dataclass(frozen=True, slots=True)
class Binding:
    """A queue and the topic patterns that route events into it."""

    queue: str
    patterns: tuple[str, ...]

    def matches(self, routing_key: str) -> bool:
        return any(topic_matches(p, routing_key) for p in self.patterns)


@lru_cache(maxsize=4096)
def _topic_regex(pattern: str) -> re.Pattern[str]:
    words: list[str] = []
    for word in pattern.split("."):
        if not (word == "#" and words and words[-1] == "#"):  # '#.#' means the same as '#'
            words.append(word)
    if words == ["#"]:
        return re.compile(r"^.*$")
    parts: list[str] = []
    for i, word in enumerate(words):
        if word == "#":
            # zero or more words, absorbing the dot that joins them to their neighbour
            parts.append(r"(?:[^.]+\.)*" if i == 0 else r"(?:\.[^.]+)*")
            continue
        token = r"[^.]+" if word == "*" else re.escape(word)
        if i > 0 and not (i == 1 and words[0] == "#"):
            token = r"\." + token
        parts.append(token)
    return re.compile("^" + "".join(parts) + "$")


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching, exactly as RabbitMQ's topic exchange does it."""
    return _topic_regex(pattern).match(routing_key) is not None


def message_headers(event: Event) -> dict[str, Any]:
    """The event's attributes as AMQP message headers (binary content mode)."""
    return {HEADER_PREFIX + name: value for name, value in event.attributes().items()}


def event_from_message(headers: Any, body: Any) -> Event:
    """Rebuild the event a message carries; `PoisonMessage` for anything that is not one.

    A queue may hold messages hookhub never wrote (another publisher, an older version, a raw
    insert), so every failure, whatever raises it, becomes `PoisonMessage`: the consumer then
    moves the message to the dead queue instead of crashing on it or redelivering it forever.
    """
    try:
        if not isinstance(headers, dict):
            raise PoisonMessage(f"headers are {type(headers).__name__}, not a table")
        if isinstance(body, bytearray | memoryview):
            body = bytes(body)
        if not isinstance(body, bytes):
            raise PoisonMessage(f"body is {type(body).__name__}, not bytes")
        attrs: dict[str, str] = {}
        for key, value in headers.items():
            if not (isinstance(key, str) and key.startswith(HEADER_PREFIX)):
                continue
            if isinstance(value, bytes):
                value = value.decode()  # strict: invalid UTF-8 is poison, not mojibake
            if not isinstance(value, str):
                raise PoisonMessage(f"header {key} is {type(value).__name__}, not a string")
            attrs[key[len(HEADER_PREFIX) :]] = value
        for name in ("id", "source", "type"):
            if not attrs.get(name, "").strip():
                raise PoisonMessage(f"header {HEADER_PREFIX}{name} is missing or blank")
        return Event.from_attributes(attrs, body)
    except PoisonMessage:
        raise
    except Exception as exc:  # InvalidEvent, UnicodeDecodeError, or whatever else refuses it
        raise PoisonMessage(f"not a valid event: {exc}") from exc


@dataclass(slots=True)
class Lease:
    """One message handed out by a subscription queue, held by this process until settled.

    A lease is the broker's side of things; the webhook POSTs made for it are "attempts", and all
    attempts of one event to one subscription form a "delivery" (see `hookhub.fanout`). The holder
    ends every lease with exactly one of `Broker.ack`, `Broker.retry` or `Broker.release`; until
    then the broker keeps the message (and hands it out again if this process dies).
    """

    event: Event
    queue: str
    attempt: int  # 1 for the first attempt; n after n-1 attempts that asked for a retry
    redelivered: bool  # the broker handed it out before without an outcome (a crash, a lost lease)
    receipt: Any = field(repr=False)  # the broker's own handle: a lease tag, a row id


LeaseHandler = Callable[[Lease], Awaitable[None]]


class Consumer(ABC):
    """A running subscription to one queue."""

    @abstractmethod
    async def cancel(self, grace: float = 0.0) -> None:
        """Stop receiving. Deliveries already handed out may still be acked, retried or released
        for up to `grace` seconds (a graceful shutdown passes the lease timeout, so in-flight
        leases finish instead of being sent twice); any left unsettled then go back to the
        queue, later settle calls on them are no-ops, and their handler tasks are cancelled."""


class Receipt:
    """Base of the brokers' lease handles. It remembers that the lease was settled, so a
    second ack/retry/release (or the release after a failing handler) is a harmless no-op
    instead of a channel error on RabbitMQ or a lost lease on SQLite."""

    __slots__ = ("settled",)

    def __init__(self) -> None:
        self.settled = False


class HandlerTasks:
    """One task per lease running a consumer's handler, kept so that `cancel` can wait for
    them or stop them. A handler that raises gets its lease released (and the error logged):
    an exception must not leave a message leased until the process ends."""

    __slots__ = ("_handler", "_release", "_tasks", "queue")

    def __init__(
        self, queue: str, handler: LeaseHandler, release: Callable[[Lease], Awaitable[None]]
    ) -> None:
        self.queue = queue
        self._handler = handler
        self._release = release
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self, lease: Lease) -> None:
        try:
            await self._handler(lease)
        except Exception:
            log.exception("handler failed on event %s from %s; releasing it", lease.event.id, self.queue)
            if not lease.receipt.settled:
                try:
                    await self._release(lease)
                except Exception as exc:  # the broker is down: it comes back by itself
                    log.warning("could not release event %s: %s", lease.event.id, exc)

    async def wait(self, grace: float) -> None:
        """Give the running handlers up to `grace` seconds to finish."""
        if grace > 0 and self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)

    async def stop(self) -> None:
        """Cancel the handlers still running and wait until they are gone."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)


class Broker(ABC):
    """Durable publish with confirms, and leased consumption with delayed retries."""

    @abstractmethod
    async def start(self, bindings: Sequence[Binding] = ()) -> None:
        """Connect and declare the topology plus the subscription bindings.

        `bindings` is the complete set for this namespace: a pattern bound to a queue before
        and absent now is unbound (a subscription's `types` changed), and a subscription queue no
        longer in the set is unbound from the exchange but kept with its messages; each such
        queue that still holds messages is logged once as a warning (`log_orphans`).

        Must not fail when the broker is down: it keeps reconnecting in the background and
        `publish` raises `BrokerUnavailable` until it is back.
        """

    @abstractmethod
    async def publish(self, events: Sequence[Event], timeout: float = 5.0) -> None:
        """Return once every event is confirmed durable.

        Raises `PublishUnconfirmed` when the messages went out but no confirm came within
        `timeout` (they may still be stored), and `BrokerUnavailable` when they were not taken.
        All-or-nothing from the caller's view: on an exception the caller answers that the
        batch was not accepted (some may have been stored: at-least-once, deduplicated later).
        """

    @abstractmethod
    async def ready(self) -> bool:
        """True while the broker is reachable and publishing would be confirmed."""

    @abstractmethod
    async def close(self) -> None:
        """Wait for in-flight confirms, then disconnect."""

    @abstractmethod
    async def queue_depths(self) -> dict[str, int]:
        """Messages waiting per hookhub queue (for /metrics and the admin API)."""

    @abstractmethod
    async def describe(self, queues: Sequence[str]) -> list[QueueInfo]:
        """The queues of `queues` that exist, in that order (a missing one is left out), for the
        admin API. `BrokerUnavailable` when the broker cannot be asked."""

    @abstractmethod
    async def delete_queue(self, queue: str) -> int:
        """Drop `queue` (a deleted subscription's) with every message it holds, leased ones and
        scheduled retries too where the broker can; how many were dropped (0: no such queue).

        Its binding leaves the set this broker applies, so neither a publish, nor a reconnect,
        nor this process's consumers of it bring it back (they see nothing); only a `start`
        whose bindings include it again does. Settle calls on its old leases are no-ops.
        """

    # Consume side (fan-out) ---------------------------------------------------------------

    @abstractmethod
    async def consume(self, queue: str, handler: LeaseHandler, *, prefetch: int, lease: float) -> Consumer:
        """Call `handler` for each message of `queue` that is due, at most `prefetch` unsettled at once.

        Each lease runs `handler` in a task of its own (up to `prefetch` concurrently). The
        handler settles it with one of `ack` / `retry` / `release`; returning without settling
        leaves it leased and counted against `prefetch` (a hand-off, e.g. to a pull request); if
        the handler raises, the lease is released and the error logged. A second settle of
        the same lease is a no-op.

        A lease does not expire while this process holds it: the embedded broker renews it
        until it is settled, however long the handler waits (for a rate limit, a free slot).
        `lease` is how soon after this process dies the message is handed out again (RabbitMQ
        ignores it and redelivers on connection loss). A message scheduled for later
        (`schedule`, `retry`) is not handed out before its time. Survives broker restarts: the
        consumer re-subscribes when the connection comes back; leases from before the loss can
        no longer be settled (their settle calls are no-ops) and come back with `redelivered`.

        A message that is not a valid event is moved to `Topology.dead_queue` and logged once,
        never handed to `handler`, never dropped, never redelivered in a loop.
        """

    @abstractmethod
    async def ack(self, lease: Lease) -> None:
        """The lease's outcome is durable elsewhere: remove the message.

        Raises `BrokerUnavailable` if the broker could not take it; the lease then stays
        unsettled (and comes back after a crash or lease expiry, as at-least-once allows)."""

    async def ack_many(self, leases: Sequence[Lease]) -> None:
        """`ack` each of `leases`, at the cost of one write where the broker can batch them (the
        archiver settles hundreds at a time). Raises as `ack`; on the embedded broker nothing
        of the batch is then settled."""
        for lease in leases:
            await self.ack(lease)

    @abstractmethod
    async def retry(self, lease: Lease, delay: float) -> None:
        """Hand the event out again after `delay` seconds with `attempt + 1`.

        The rescheduled copy is durable before the original is removed, so a crash in between
        can only duplicate it, never lose it. On `BrokerUnavailable` nothing was settled.
        """

    @abstractmethod
    async def release(self, lease: Lease) -> None:
        """Put the message back now, attempt unchanged (pause, disable, shutdown)."""

    @abstractmethod
    async def schedule(self, queue: str, event: Event, *, attempt: int, delay: float) -> None:
        """Durably enqueue `event` into `queue`, due after `delay` seconds, as attempt `attempt`.

        Used by `retry`, and by the Knative fan-out function, which gets its event over HTTP
        rather than as a `Lease`.
        """


def log_orphans(orphans: dict[str, int]) -> None:
    """The start-up warning for queues of removed subscriptions that still hold messages."""
    for queue, depth in sorted(orphans.items()):
        if depth:
            log.warning(
                "queue %s belongs to no subscription any more and holds %d messages: they are kept; "
                "add the subscription back to deliver them",
                queue,
                depth,
            )
