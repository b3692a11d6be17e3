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

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from hookhub.events import Event

HEADER_PREFIX = "cloudEvents:"  # CloudEvents AMQP binding: attributes as application properties


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

    def subscription_queue(self, name: str) -> str:
        return f"{self.namespace}.sub.{name}"


class BrokerUnavailable(Exception):
    """The broker could not confirm the messages as durable (down, refused, or too slow)."""


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


def event_from_message(headers: dict[str, Any], body: bytes) -> Event:
    attrs = {
        k[len(HEADER_PREFIX) :]: (v.decode() if isinstance(v, bytes) else v)
        for k, v in headers.items()
        if k.startswith(HEADER_PREFIX)
    }
    return Event.from_attributes(attrs, body)


class Broker(ABC):
    """Durable publish with confirms; the consume side arrives with fan-out."""

    @abstractmethod
    async def start(self, bindings: Sequence[Binding] = ()) -> None:
        """Connect and declare the topology plus the given subscription bindings.

        Must not fail when the broker is down: it keeps reconnecting in the background and
        `publish` raises `BrokerUnavailable` until it is back.
        """

    @abstractmethod
    async def publish(self, events: Sequence[Event], timeout: float = 5.0) -> None:
        """Return once every event is confirmed durable; raise `BrokerUnavailable` otherwise.

        All-or-nothing from the caller's view: on an exception the caller treats the whole
        batch as not accepted (some may have been stored: at-least-once, deduplicated later).
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
