"""RabbitMQ broker: pika's asyncio adapter on the running loop, pipelined publisher confirms.

Modules, by concern: `link` (one self-healing connection, used by the publisher and by the
consumers), `encoder` (publish frames), `confirms` (pipelined confirm tracking), `publisher`,
`tiers` (scheduling through TTL queues), `topology` (declarations and bindings as the
complete set), `consumer`, and `broker`, which ties them together.
"""

from hookhub.broker.rabbitmq.broker import RabbitMQBroker
from hookhub.broker.rabbitmq.tiers import DEFAULT_DELAY_TIERS, delay_name, redeliver_exchange

__all__ = ["DEFAULT_DELAY_TIERS", "RabbitMQBroker", "delay_name", "redeliver_exchange"]
