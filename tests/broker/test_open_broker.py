"""`open_broker` picks the implementation from the URL scheme, as hookhub.yaml's `broker:` does."""

from __future__ import annotations

import pytest

from hookhub.broker import Topology, open_broker
from hookhub.broker.memory import MemoryBroker
from hookhub.broker.rabbitmq import RabbitMQBroker
from hookhub.broker.sqlite import SQLiteBroker


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/%2F", RabbitMQBroker),
        ("amqps://u:p@rabbit.example:5671/vhost", RabbitMQBroker),
        ("AMQP://host", RabbitMQBroker),
        ("sqlite:///./var/hookhub.db", SQLiteBroker),
        ("sqlite:////tmp/hookhub.db", SQLiteBroker),
        ("memory://", MemoryBroker),
        ("memory://shared", MemoryBroker),
    ],
)
def test_open_broker_by_scheme(url: str, kind: type):
    broker = open_broker(url, Topology("t"))
    assert isinstance(broker, kind)


@pytest.mark.parametrize("url", ["postgresql://x/y", "redis://h", "/var/hookhub.db", "sqlite:///:memory:"])
def test_open_broker_rejects_other_urls(url: str):
    with pytest.raises(ValueError):
        open_broker(url, Topology("t"))


def test_memory_urls_with_one_name_share_their_queues():
    topology = Topology("t")
    brokers = [
        open_broker(url, topology)
        for url in ("memory://a", "memory://a", "memory://b", "memory://", "memory://")
    ]
    servers = [b.server for b in brokers if isinstance(b, MemoryBroker)]
    assert len(servers) == 5
    assert servers[0] is servers[1]  # one name, one set of queues
    assert len({id(s) for s in servers}) == 4  # another name, or none: a server of its own
