"""`open_broker` picks the implementation from the URL scheme, as hookhub.yaml's `broker:` does."""

from __future__ import annotations

import pytest

from hookhub.broker import Topology, open_broker
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
    ],
)
def test_open_broker_by_scheme(url: str, kind: type):
    broker = open_broker(url, Topology("t"))
    assert isinstance(broker, kind)


@pytest.mark.parametrize("url", ["postgresql://x/y", "redis://h", "/var/hookhub.db", "sqlite:///:memory:"])
def test_open_broker_rejects_other_urls(url: str):
    with pytest.raises(ValueError):
        open_broker(url, Topology("t"))
