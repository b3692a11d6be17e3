"""Brokers behind one interface, chosen by URL: `amqp(s)://` RabbitMQ, `sqlite:///` embedded,
`memory://` in-process (tests; nothing survives the process; `memory://name` is one set of
queues shared by every broker of the process opened with that name)."""

from __future__ import annotations

from urllib.parse import urlsplit

from hookhub.broker.base import (
    Binding,
    Broker,
    BrokerUnavailable,
    Consumer,
    Lease,
    LeaseHandler,
    PoisonMessage,
    PublishUnconfirmed,
    QueueInfo,
    Topology,
    event_from_message,
    message_headers,
    topic_matches,
)

__all__ = [
    "Binding",
    "Broker",
    "BrokerUnavailable",
    "Consumer",
    "Lease",
    "LeaseHandler",
    "PoisonMessage",
    "PublishUnconfirmed",
    "QueueInfo",
    "Topology",
    "event_from_message",
    "message_headers",
    "open_broker",
    "topic_matches",
]


def open_broker(url: str, topology: Topology) -> Broker:
    """The broker for `url` (not started: call `await broker.start(bindings)`).

    Implementations are imported lazily so the embedded shape never imports pika.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("amqp", "amqps"):
        from hookhub.broker.rabbitmq import RabbitMQBroker

        return RabbitMQBroker(url, topology)
    if scheme == "sqlite":
        from hookhub.broker.sqlite import SQLiteBroker

        return SQLiteBroker(url, topology)
    if scheme == "memory":
        from hookhub.broker.memory import MemoryBroker, MemoryServer

        name = urlsplit(url).netloc  # memory://name: shared by the brokers of this process
        return MemoryBroker(topology, server=MemoryServer.named(name) if name else None)
    raise ValueError(
        f"unsupported broker URL scheme {scheme!r}: use amqp://, amqps://, sqlite:///path or memory://"
    )
