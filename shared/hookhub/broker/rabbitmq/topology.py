"""Declaring the namespace's exchanges and queues, and applying the subscription bindings as
the complete set (a pattern or a queue dropped from the config is unbound).

AMQP cannot list a queue's bindings, so the last applied set is kept inside RabbitMQ itself, in
the durable quorum queue `<ns>.topology`, as JSON records `{"bindings": {queue: [pattern...]}}`.
Applying reads every record there with `basic.get` (unacked), binds the new set, unbinds what
the records list and the new set does not, publishes the new record with a confirm, and only
then acks the records it read. So there is no moment without a durable record (a crash anywhere
leaves the old records or both), and nothing needs `x-max-length`: the previous set is the union
of whatever records are there, which is always a superset of what is bound. Two hubs starting
at once each leave their record (a record held unacked by one is invisible to the other, which
then only adds bindings); the next start reads both and folds them into one.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

from pika import BasicProperties, spec
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.channel import Channel

from hookhub.broker.base import Binding, BrokerUnavailable, Topology
from hookhub.broker.rabbitmq.amqp import QUORUM, RPC_TIMEOUT, Lost, close_quietly, open_channel, rpc, settle
from hookhub.broker.rabbitmq.tiers import declare_redeliver, redeliver_exchange

log = logging.getLogger(__name__)

Applied = dict[str, tuple[str, ...]]  # queue -> its topic patterns


def record_queue(topology: Topology) -> str:
    """The queue holding the last applied bindings of the namespace."""
    return f"{topology.namespace}.topology"


def binding_set(bindings: Sequence[Binding]) -> Applied:
    applied: dict[str, dict[str, None]] = {}
    for binding in bindings:
        applied.setdefault(binding.queue, {}).update(dict.fromkeys(binding.patterns))
    return {queue: tuple(patterns) for queue, patterns in applied.items()}


async def declare_base(channel: Channel, closed: Lost, topology: Topology) -> None:
    """Exchanges, the unrouted and dead queues, the redeliver exchange: what every hub needs."""
    t = topology
    await rpc(
        closed, channel.exchange_declare, exchange=t.unrouted_exchange, exchange_type="fanout", durable=True
    )
    await rpc(
        closed,
        channel.exchange_declare,
        exchange=t.exchange,
        exchange_type="topic",
        durable=True,
        arguments={"alternate-exchange": t.unrouted_exchange},
    )
    for queue in (t.unrouted_queue, t.dead_queue):
        await rpc(closed, channel.queue_declare, queue=queue, durable=True, arguments=QUORUM)
    await rpc(
        closed, channel.queue_bind, queue=t.unrouted_queue, exchange=t.unrouted_exchange, routing_key=""
    )
    await declare_redeliver(channel, closed, t)


class Probe:
    """Passive queue declarations on a channel of their own: a missing queue (404) closes the
    channel, so it is reopened for the next question rather than failing the caller's channel."""

    def __init__(self, connection: AsyncioConnection, lost: Lost | None) -> None:
        self._connection = connection
        self._lost = lost
        self._channel: tuple[Channel, Lost] | None = None

    async def depth(self, queue: str) -> int | None:
        """Messages ready in `queue`; None if it does not exist."""
        counts = await self.counts(queue)
        return None if counts is None else counts[0]

    async def counts(self, queue: str) -> tuple[int, int] | None:
        """Messages ready in `queue` and its consumers; None if it does not exist."""
        if self._channel is None or not self._channel[0].is_open:
            self._channel = await open_channel(self._connection, self._lost)
        channel, closed = self._channel
        try:
            frame = await rpc(closed, channel.queue_declare, queue=queue, passive=True)
        except BrokerUnavailable:
            if not self._connection.is_open:
                raise
            return None
        return int(frame.method.message_count), int(frame.method.consumer_count)

    def close(self) -> None:
        if self._channel is not None:
            close_quietly(self._channel[0])


async def apply_bindings(
    connection: AsyncioConnection, lost: Lost, topology: Topology, bindings: Sequence[Binding]
) -> dict[str, int]:
    """Declare everything and make the bindings exactly `bindings`; the depths of the queues
    that were dropped from the set (unbound from the events exchange, kept with their messages)."""
    current = binding_set(bindings)
    records = record_queue(topology)
    probe = Probe(connection, lost)
    channel, closed = await open_channel(connection, lost)
    try:
        await declare_base(channel, closed, topology)
        await rpc(closed, channel.queue_declare, queue=records, durable=True, arguments=QUORUM)
        previous, last_tag = await _read_records(channel, closed, records)
        for queue, patterns in current.items():
            await rpc(closed, channel.queue_declare, queue=queue, durable=True, arguments=QUORUM)
            for pattern in patterns:
                await rpc(
                    closed, channel.queue_bind, queue=queue, exchange=topology.exchange, routing_key=pattern
                )
            # retries come back through `<ns>.redeliver`; an orphan keeps this binding, so
            # messages parked in a delay tier still return to their queue
            await rpc(
                closed,
                channel.queue_bind,
                queue=queue,
                exchange=redeliver_exchange(topology),
                routing_key=queue,
            )
        orphans: dict[str, int] = {}
        for queue, patterns in previous.items():
            stale = [p for p in patterns if p not in current.get(queue, ())]
            if not stale:
                continue
            if queue not in current:
                depth = await probe.depth(queue)
                if depth is None:  # deleted by an operator: nothing left to unbind
                    continue
                orphans[queue] = depth
            for pattern in stale:
                await rpc(
                    closed, channel.queue_unbind, queue=queue, exchange=topology.exchange, routing_key=pattern
                )
        await _write_record(channel, closed, records, current)
        if last_tag is not None:
            channel.basic_ack(last_tag, multiple=True)
    finally:
        probe.close()
        close_quietly(channel)
    return orphans


async def _read_records(channel: Channel, closed: Lost, queue: str) -> tuple[Applied, int | None]:
    """The union of every record in `queue` (left unacked) and the last delivery tag read."""
    loop = asyncio.get_running_loop()
    reply: list[asyncio.Future[Any]] = [loop.create_future()]  # the current basic.get's answer

    def on_empty(_frame: Any) -> None:
        settle(reply[0], None)

    def on_message(_ch: Any, method: Any, _props: Any, body: bytes) -> None:
        settle(reply[0], (method, body))

    channel.add_callback(on_empty, [spec.Basic.GetEmpty], one_shot=False)
    union: dict[str, dict[str, None]] = {}
    last_tag: int | None = None
    while True:
        reply[0] = answer = loop.create_future()
        channel.basic_get(queue, on_message)
        await asyncio.wait([answer, closed], timeout=RPC_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if not answer.done():
            raise BrokerUnavailable(f"cannot read {queue}: {closed.result() if closed.done() else 'timeout'}")
        got = answer.result()
        if got is None:
            break
        method, body = got
        last_tag = method.delivery_tag
        try:
            bindings = json.loads(body)["bindings"]
            for name, patterns in bindings.items():
                union.setdefault(str(name), {}).update(dict.fromkeys(str(p) for p in patterns))
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("ignoring an unreadable record in %s: %r", queue, body[:200])
    return {name: tuple(patterns) for name, patterns in union.items()}, last_tag


async def _write_record(channel: Channel, closed: Lost, queue: str, applied: Applied) -> None:
    loop = asyncio.get_running_loop()
    confirmed: asyncio.Future[Any] = loop.create_future()
    await rpc(closed, channel.confirm_delivery, ack_nack_callback=lambda frame: settle(confirmed, frame))
    body = json.dumps({"bindings": {q: list(p) for q, p in sorted(applied.items())}}).encode()
    properties = BasicProperties(content_type="application/json", delivery_mode=2)
    channel.basic_publish("", queue, body, properties)
    await asyncio.wait([confirmed, closed], timeout=RPC_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
    if not confirmed.done() or isinstance(confirmed.result().method, spec.Basic.Nack):
        raise BrokerUnavailable(f"RabbitMQ did not confirm the bindings record in {queue}")
