"""Scheduled messages without the delayed-message plugin: fixed TTL "tiers".

Each tier (powers of two, 1 s to ~4.5 h by default) is a fanout exchange `<ns>.delay.<tier>` into
a quorum queue with that `x-message-ttl`, dead-lettering at-least-once into the direct exchange
`<ns>.redeliver`, where every subscription queue is bound under its own name. A message is parked
in the largest tier not beyond its due time, with the target queue as routing key and the attempt
and not-before time as headers. A consumer that gets it early re-parks it for the remainder
(binary steps: at most log2(delay) hops) or, under the smallest tier, holds it until due.
Powers of two, because jittered backoff asks for arbitrary delays: every delay is a sum of few
tiers, and the common 1, 2, 4, 8 s retries are exactly one hop. The redeliver exchange's
alternate exchange is `<ns>.unrouted`, so a retry for a queue nobody bound is kept, not dropped.
Each tier is declared on first use: a quorum queue costs the server a Raft log and file handles.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

from pika.channel import Channel

from hookhub.broker.base import Topology
from hookhub.broker.rabbitmq.amqp import QUORUM, Lost, rpc

DEFAULT_DELAY_TIERS: tuple[float, ...] = tuple(float(2**k) for k in range(15))  # 1 s .. 16384 s


def redeliver_exchange(topology: Topology) -> str:
    return f"{topology.namespace}.redeliver"


def delay_name(topology: Topology, seconds: float) -> str:
    """Exchange and queue name of one delay tier: `<ns>.delay.4s`, `<ns>.delay.250ms`."""
    ms = round(seconds * 1000)
    return (
        f"{topology.namespace}.delay.{ms // 1000}s"
        if ms % 1000 == 0
        else f"{topology.namespace}.delay.{ms}ms"
    )


async def declare_redeliver(channel: Channel, closed: Lost, topology: Topology) -> None:
    await rpc(
        closed,
        channel.exchange_declare,
        exchange=redeliver_exchange(topology),
        exchange_type="direct",
        durable=True,
        arguments={"alternate-exchange": topology.unrouted_exchange},
    )


class DelayTiers:
    """The configured tiers of one namespace: names, lengths, and which one a delay uses."""

    def __init__(self, topology: Topology, tiers: Sequence[float]) -> None:
        millis = sorted({round(t * 1000) for t in tiers})
        if not millis or millis[0] <= 0:
            raise ValueError("delay tiers must be positive")
        self.topology = topology
        self.seconds = [ms / 1000 for ms in millis]
        self.names = [delay_name(topology, t) for t in self.seconds]

    def tier_for(self, remaining: float) -> int | None:
        """Index of the largest tier not longer than `remaining`; None under the smallest."""
        index = bisect.bisect_right(self.seconds, remaining) - 1
        return index if index >= 0 else None

    def exchange(self, tier: int | None) -> str:
        """Where to park for `tier`; None: straight back through the redeliver exchange."""
        return redeliver_exchange(self.topology) if tier is None else self.names[tier]

    async def declare(self, channel: Channel, closed: Lost, tier: int | None) -> None:
        """Declare the redeliver exchange and, unless None, the tier's exchange and queue."""
        await declare_redeliver(channel, closed, self.topology)
        if tier is None:
            return
        name = self.names[tier]
        arguments: dict[str, Any] = {
            **QUORUM,
            "x-message-ttl": round(self.seconds[tier] * 1000),
            "x-dead-letter-exchange": redeliver_exchange(self.topology),
            # quorum queues dead-letter at-least-once only with reject-publish overflow
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
        await rpc(closed, channel.exchange_declare, exchange=name, exchange_type="fanout", durable=True)
        await rpc(closed, channel.queue_declare, queue=name, durable=True, arguments=arguments)
        await rpc(closed, channel.queue_bind, queue=name, exchange=name, routing_key="")
