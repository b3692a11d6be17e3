"""`describe` and `delete_queue`, against the in-memory, SQLite and RabbitMQ brokers alike.

What the admin API relies on: `describe` answers for the queues that exist, in the order asked,
with what is waiting, who consumes and what is leased (None where the broker cannot tell);
`delete_queue` drops a deleted subscription's queue with its messages, leased and scheduled ones
too, and nothing brings it back (a publish, a reconnect, its consumer) until its binding is
applied again; other queues are untouched.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlparse

import pytest

from hookhub.broker import Binding, Broker, QueueInfo, Topology

from ._support import UNREACHABLE_AMQP, Harness, TCPProxy
from .test_consume import Inbox, make_event, wait_until


async def described(broker: Broker, queues: list[str], expected: list[QueueInfo]) -> None:
    last: list[list[QueueInfo]] = []

    async def check() -> bool:
        last[:] = [await broker.describe(queues)]
        return last[0] == expected

    try:
        await wait_until(check)
    except AssertionError:
        assert last[0] == expected  # shows the difference


def consumers(harness: Harness, n: int) -> int | None:
    """What `describe` says about `n` consumers: the SQLite file keeps no trace of them."""
    return None if harness.kind == "sqlite" else n


async def started(harness: Harness, *names: str) -> tuple[Broker, list[str], list[Binding]]:
    queues = [harness.sub(name) for name in names]
    bindings = [Binding(q, (f"com.{name}.#",)) for q, name in zip(queues, names, strict=True)]
    broker = harness.broker()
    await broker.start(bindings)
    return broker, queues, bindings


async def test_describe_reports_depth_of_the_queues_that_exist_in_the_order_asked(harness: Harness):
    broker, [crm, erp], _ = await started(harness, "crm", "erp")
    missing = harness.topology.subscription_queue("never-declared")
    await broker.publish([make_event(i, "com.crm.x") for i in range(3)] + [make_event(9, "com.erp.y")])
    await broker.publish([make_event(10, "com.nobody.z")])

    unrouted = harness.topology.unrouted_queue
    await described(
        broker,
        [erp, missing, crm, unrouted],
        [
            QueueInfo(erp, 1, consumers(harness, 0), 0),
            QueueInfo(crm, 3, consumers(harness, 0), 0),
            QueueInfo(unrouted, 1, consumers(harness, 0), 0),
        ],
    )
    assert await broker.describe([missing]) == []
    assert await broker.describe([]) == []


async def test_describe_counts_consumers_and_the_leases_they_hold(harness: Harness):
    broker, [crm, erp], _ = await started(harness, "crm", "erp")
    inbox = Inbox()
    consumer = await broker.consume(crm, inbox, prefetch=10, lease=30)
    await broker.publish([make_event(i, "com.crm.x") for i in range(3)])
    leases = [await inbox.get() for _ in range(3)]

    await described(
        broker,
        [crm, erp],
        [QueueInfo(crm, 0, consumers(harness, 1), 3), QueueInfo(erp, 0, consumers(harness, 0), 0)],
    )
    await broker.ack(leases[0])
    await described(broker, [crm], [QueueInfo(crm, 0, consumers(harness, 1), 2)])

    await consumer.cancel()  # what it held goes back: waiting again, nobody consuming
    await described(broker, [crm], [QueueInfo(crm, 2, consumers(harness, 0), 0)])


async def test_a_consumer_in_another_process_counts_too(harness: Harness):
    broker, [crm], bindings = await started(harness, "crm")
    other = harness.broker()
    await other.start(bindings)
    inbox = Inbox()
    await other.consume(crm, inbox, prefetch=10, lease=30)
    await broker.publish([make_event(i, "com.crm.x") for i in range(2)])
    [await inbox.get() for _ in range(2)]

    # RabbitMQ tells no unacked count: only its own leases would be known to `broker`
    in_flight = None if harness.kind == "rabbitmq" else 2
    await described(broker, [crm], [QueueInfo(crm, 0, consumers(harness, 1), in_flight)])
    if harness.kind == "rabbitmq":
        await described(other, [crm], [QueueInfo(crm, 0, 1, 2)])


async def test_delete_queue_drops_its_messages_and_nothing_else(harness: Harness):
    broker, [crm, erp], _ = await started(harness, "crm", "erp")
    await broker.publish([make_event(i, "com.crm.x") for i in range(3)] + [make_event(9, "com.erp.y")])
    await described(broker, [crm], [QueueInfo(crm, 3, consumers(harness, 0), 0)])

    assert await broker.delete_queue(crm) == 3

    assert await broker.describe([crm, erp]) == [QueueInfo(erp, 1, consumers(harness, 0), 0)]
    assert [m.message_id for m in await harness.read(erp)] == ["evt-9"]
    assert await broker.delete_queue(crm) == 0  # gone already
    assert await broker.delete_queue(harness.topology.subscription_queue("never-declared")) == 0


async def test_a_publish_after_the_delete_does_not_bring_the_queue_back(harness: Harness):
    broker, [crm, erp], bindings = await started(harness, "crm", "erp")
    await broker.delete_queue(crm)

    await broker.publish([make_event(1, "com.crm.x"), make_event(2, "com.erp.y")])

    assert [info.name for info in await broker.describe([crm, erp])] == [erp]
    assert [m.message_id for m in await harness.read(harness.topology.unrouted_queue)] == ["evt-1"]
    assert [m.message_id for m in await harness.read(erp)] == ["evt-2"]

    await broker.start([bindings[1]])  # the new complete set, without it: still gone
    await broker.publish([make_event(3, "com.crm.x")])
    assert await broker.describe([crm]) == []

    await broker.start(bindings)  # bound again: a queue again
    await broker.publish([make_event(4, "com.crm.x")])
    assert [m.message_id for m in await harness.read(crm)] == ["evt-4"]


async def test_delete_queue_drops_leased_and_scheduled_messages_its_consumer_sees_nothing(harness: Harness):
    broker, [crm, erp], bindings = await started(harness, "crm", "erp")
    inbox, erp_inbox = Inbox(), Inbox()
    await broker.consume(crm, inbox, prefetch=10, lease=30)
    await broker.consume(erp, erp_inbox, prefetch=10, lease=30)
    await broker.publish([make_event(i, "com.crm.x") for i in range(4)])
    leases = [await inbox.get() for _ in range(4)]
    await broker.retry(leases[0], delay=60)  # scheduled for later
    await broker.publish([make_event(5, "com.crm.x")])
    fifth = await inbox.get()
    await broker.release(fifth)  # back in the queue, taken again at once
    await inbox.get()

    dropped = await broker.delete_queue(crm)

    # RabbitMQ parks retries in shared delay tiers: only the leases this process held count
    assert dropped == (4 if harness.kind == "rabbitmq" else 5)
    for lease in leases[1:]:  # settling the old leases is harmless and brings nothing back
        await broker.ack(lease)
    await broker.release(leases[1])
    await inbox.nothing_within(0.6)
    assert await broker.describe([crm]) == []

    await broker.publish([make_event(7, "com.erp.y")])
    assert (await erp_inbox.get()).event.id == "evt-7"

    await broker.start(bindings)  # the subscription is back: so is its consumer
    await broker.publish([make_event(8, "com.crm.x")])
    assert (await inbox.get(timeout=10)).event.id == "evt-8"


# -- RabbitMQ: the bindings record and reconnects --------------------------------------------------


@pytest.fixture
async def rabbit(rabbitmq_url: str, namespace: str) -> AsyncIterator[Harness]:
    from hookhub.broker.rabbitmq.topology import record_queue

    h = Harness("rabbitmq", rabbitmq_url, Topology(namespace), UNREACHABLE_AMQP)
    h.queues.update((h.topology.dead_queue, record_queue(h.topology)))
    try:
        yield h
    finally:
        await h.cleanup()


@pytest.mark.rabbitmq
async def test_rabbitmq_a_reconnect_or_a_restart_does_not_declare_a_deleted_queue(
    rabbit: Harness, rabbitmq_url: str
):
    target = urlparse(rabbitmq_url)
    proxy = TCPProxy(target.hostname or "127.0.0.1", target.port or 5672)
    await proxy.start()
    try:
        crm, erp = rabbit.sub("crm"), rabbit.sub("erp")
        bindings = [Binding(crm, ("com.crm.#",)), Binding(erp, ("com.erp.#",))]
        broker = rabbit.broker(proxy.url)
        await broker.start(bindings)
        inbox = Inbox()
        await broker.consume(crm, inbox, prefetch=4, lease=30)
        assert await broker.delete_queue(crm) == 0

        proxy.drop()  # both connections: the publisher re-applies its bindings, the consumer re-attaches
        await wait_until(lambda: _down(broker), timeout=5)
        await wait_until(broker.ready, timeout=10)
        await asyncio.sleep(0.5)  # the consumer's re-subscribe delay
        assert [i.name for i in await broker.describe([crm, erp])] == [erp]

        # a process started later with the new set (the record still lists crm) leaves it gone
        later = rabbit.broker()
        await later.start([bindings[1]])
        assert [i.name for i in await later.describe([crm, erp])] == [erp]
    finally:
        await proxy.stop()


async def _down(broker: Broker) -> bool:
    return not await broker.ready()


@pytest.mark.rabbitmq
async def test_rabbitmq_a_queue_deleted_by_another_process_is_not_declared_by_its_consumer(rabbit: Harness):
    crm = rabbit.sub("crm")
    bindings = [Binding(crm, ("com.crm.#",))]
    fanout, admin = rabbit.broker(), rabbit.broker()
    await fanout.start(bindings)
    await admin.start(bindings)
    inbox = Inbox()
    await fanout.consume(crm, inbox, prefetch=4, lease=30)
    await described(admin, [crm], [QueueInfo(crm, 0, 1, None)])

    await admin.delete_queue(crm)  # the server cancels `fanout`'s subscription

    await asyncio.sleep(1.0)  # well past the consumer's re-subscribe delay
    assert await admin.describe([crm]) == []

    await admin.start(bindings)  # declared and bound again: the consumer finds it by itself
    await described(admin, [crm], [QueueInfo(crm, 0, 1, None)])
    await admin.publish([make_event(1, "com.crm.x")])
    assert (await inbox.get(timeout=10)).event.id == "evt-1"
