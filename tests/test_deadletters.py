"""Dead-letter replay and purge against a real SQLite store and the in-memory broker (RabbitMQ in
one run): a replayed dead letter is back on its subscription's queue as attempt 1 and off the
list; pages keep "all of a subscription" bounded; a gone subscription's letters stay listed."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hookhub.broker.base import Binding, Broker, BrokerUnavailable, Topology
from hookhub.broker.memory import MemoryBroker, MemoryServer
from hookhub.deadletters import DeadLetters
from hookhub.events import Event
from hookhub.store import SqlStore
from hookhub.store.records import AttemptRecord, DeadLetter, DeadLetterQuery
from tests.broker._support import UNREACHABLE_AMQP, Harness

Memory = tuple[MemoryBroker, MemoryServer]


@pytest.fixture
async def memory(namespace: str) -> AsyncIterator[Memory]:
    server = MemoryServer()
    broker = MemoryBroker(Topology(namespace), server=server)
    await broker.start()
    yield broker, server
    await broker.close()


def event(type_: str = "com.test.created", **extensions: str) -> Event:
    return Event(
        id=uuid.uuid4().hex,
        source="/providers/test",
        type=type_,
        data=b'{"n": 1}\x00\xff',
        datacontenttype="application/json",
        extensions=dict(extensions),
    )


async def dead(store: SqlStore, subscription: str, ev: Event, dead_at: float | None = None) -> DeadLetter:
    """Record the last attempt of a delivery of `ev` and its dead letter, as the fan-out does."""
    at = time.time() - 60 if dead_at is None else dead_at
    delivery = f"msg_{uuid.uuid4().hex}"
    attempt = AttemptRecord(
        delivery,
        subscription,
        ev.source,
        ev.id,
        ev.type,
        ev.correlationid,
        3,
        at,
        500,
        5.0,
        "HTTP 500",
        "dead",
    )
    letter = DeadLetter(
        delivery,
        subscription,
        ev.source,
        ev.id,
        ev.type,
        ev.correlationid,
        ev.attributes(),
        ev.data,
        3,
        500,
        "HTTP 500",
        at,
    )
    await store.attempts.record(attempt, letter)
    return letter


def queues(topology: Topology, *names: str) -> Any:
    known = {name: topology.subscription_queue(name) for name in names}
    return known.get


def on_queue(server: MemoryServer, queue: str) -> list[tuple[Event, int]]:
    """(event, attempt number) of every message on `queue`, in order."""
    return [
        (Event.from_attributes({k[3:]: v for k, v in m.headers.items()}, m.body), m.attempts + 1)
        for m in server.queues.get(queue, {}).values()
    ]


async def test_replay_one_puts_it_back_as_attempt_1_and_marks_it(store: SqlStore, memory: Memory) -> None:
    broker, server = memory
    topology = broker.topology
    letters = [await dead(store, "crm", event(tenant="acme")) for _ in range(3)]
    dls = DeadLetters(broker, store.attempts, queues(topology, "crm"))

    assert await dls.replay(DeadLetterQuery(delivery_ids=[letters[1].delivery_id])) == 1

    back = on_queue(server, topology.subscription_queue("crm"))
    assert len(back) == 1
    replayed, attempt = back[0]
    assert attempt == 1
    original = Event.from_attributes(letters[1].attributes, letters[1].data)
    assert replayed == original  # every attribute, extension and byte of data
    assert replayed.extensions == {"tenant": "acme"}
    still = await store.attempts.find_dead_letters(DeadLetterQuery(subscription="crm"))
    assert [d.delivery_id for d in still] == [letters[0].delivery_id, letters[2].delivery_id]
    marked = await store.attempts.dead_letter(letters[1].delivery_id)
    assert marked is not None and marked.replayed_at is not None
    # a second replay of the same one finds nothing to do
    assert await dls.replay(DeadLetterQuery(delivery_ids=[letters[1].delivery_id])) == 0
    assert len(on_queue(server, topology.subscription_queue("crm"))) == 1


async def test_replay_many_by_id(store: SqlStore, memory: Memory) -> None:
    broker, server = memory
    topology = broker.topology
    crm = [await dead(store, "crm", event()) for _ in range(4)]
    shop = [await dead(store, "shop", event()) for _ in range(2)]
    dls = DeadLetters(broker, store.attempts, queues(topology, "crm", "shop"))
    chosen = [crm[0], crm[3], shop[1]]

    assert await dls.replay(DeadLetterQuery(delivery_ids=[d.delivery_id for d in chosen])) == 3

    assert [e.id for e, _ in on_queue(server, topology.subscription_queue("crm"))] == [
        crm[0].event_id,
        crm[3].event_id,
    ]
    assert [e.id for e, _ in on_queue(server, topology.subscription_queue("shop"))] == [shop[1].event_id]
    left = {d.delivery_id for d in await store.attempts.find_dead_letters(DeadLetterQuery(limit=100))}
    assert left == {crm[1].delivery_id, crm[2].delivery_id, shop[0].delivery_id}


async def test_replay_all_of_a_subscription_in_pages(store: SqlStore, memory: Memory) -> None:
    broker, server = memory
    topology = broker.topology
    base = time.time() - 3600
    crm = [await dead(store, "crm", event(), dead_at=base + i) for i in range(23)]
    crm.append(await dead(store, "crm", event(), dead_at=base + 5))  # a dead_at tie across a page edge
    other = [await dead(store, "shop", event(), dead_at=base + i) for i in range(3)]
    dls = DeadLetters(broker, store.attempts, queues(topology, "crm", "shop"), page_size=5)

    assert await dls.replay(DeadLetterQuery(subscription="crm")) == 24

    sent = [e.id for e, attempt in on_queue(server, topology.subscription_queue("crm")) if attempt == 1]
    assert sorted(sent) == sorted(d.event_id for d in crm)  # each exactly once
    assert await store.attempts.find_dead_letters(DeadLetterQuery(subscription="crm")) == []
    assert len(await store.attempts.find_dead_letters(DeadLetterQuery(subscription="shop"))) == len(other)
    assert topology.subscription_queue("shop") not in server.queues


async def test_replay_filters_by_type_and_time(store: SqlStore, memory: Memory) -> None:
    broker, server = memory
    topology = broker.topology
    base = time.time() - 3600
    created = [await dead(store, "crm", event("com.test.created"), dead_at=base + i) for i in range(4)]
    await dead(store, "crm", event("com.test.deleted"), dead_at=base + 1)
    dls = DeadLetters(broker, store.attempts, queues(topology, "crm"))

    query = DeadLetterQuery(subscription="crm", type="com.test.created", since=base + 1, until=base + 3)
    assert await dls.replay(query) == 2

    assert [e.id for e, _ in on_queue(server, topology.subscription_queue("crm"))] == [
        created[1].event_id,
        created[2].event_id,
    ]


async def test_letters_of_a_gone_subscription_stay_listed(
    store: SqlStore, memory: Memory, caplog: pytest.LogCaptureFixture
) -> None:
    broker, server = memory
    topology = broker.topology
    gone = [await dead(store, "gone", event()) for _ in range(2)]
    kept = await dead(store, "crm", event())
    dls = DeadLetters(broker, store.attempts, queues(topology, "crm"))

    with caplog.at_level(logging.WARNING, logger="hookhub.deadletters"):
        ids = [kept.delivery_id, *(d.delivery_id for d in gone)]
        assert await dls.replay(DeadLetterQuery(delivery_ids=ids)) == 1

    assert "2 dead letters of subscription 'gone' were not replayed" in caplog.text
    assert topology.subscription_queue("gone") not in server.queues
    listed = await store.attempts.find_dead_letters(DeadLetterQuery(subscription="gone"))
    assert {d.delivery_id for d in listed} == {d.delivery_id for d in gone}


async def test_a_broker_that_is_down_marks_nothing(store: SqlStore, namespace: str) -> None:
    server = MemoryServer()
    broker = MemoryBroker(Topology(namespace), server=server)
    await broker.start()
    letter = await dead(store, "crm", event())
    dls = DeadLetters(broker, store.attempts, queues(broker.topology, "crm"))
    server.down = True
    try:
        with pytest.raises(BrokerUnavailable):
            await dls.replay(DeadLetterQuery(subscription="crm"))
    finally:
        server.down = False
        await broker.close()
    assert [d.delivery_id for d in await store.attempts.find_dead_letters(DeadLetterQuery())] == [
        letter.delivery_id
    ]


async def test_a_replay_that_dies_again_is_listed_again_with_the_same_delivery_id(
    store: SqlStore, memory: Memory
) -> None:
    broker, server = memory
    letter = await dead(store, "crm", event())
    dls = DeadLetters(broker, store.attempts, queues(broker.topology, "crm"))
    assert await dls.replay(DeadLetterQuery(subscription="crm")) == 1
    # the fan-out fails it again under the same delivery id: it is listed again, replayable again
    again = dataclasses.replace(letter, dead_at=time.time(), attempts=8)
    attempt = AttemptRecord(
        letter.delivery_id, "crm", letter.source, letter.event_id, letter.event_type, "c", 8, again.dead_at,
        500, 1.0, "HTTP 500", "dead",
    )  # fmt: skip
    await store.attempts.record(attempt, again)
    listed = await store.attempts.find_dead_letters(DeadLetterQuery(subscription="crm"))
    assert [(d.delivery_id, d.attempts) for d in listed] == [(letter.delivery_id, 8)]
    assert await dls.replay(DeadLetterQuery(subscription="crm")) == 1
    assert len(on_queue(server, broker.topology.subscription_queue("crm"))) == 2


async def test_purge_deletes_the_matching_ones(store: SqlStore, memory: Memory) -> None:
    broker, server = memory
    crm = [await dead(store, "crm", event()) for _ in range(3)]
    shop = await dead(store, "shop", event())
    dls = DeadLetters(broker, store.attempts, queues(broker.topology, "crm", "shop"))

    assert await dls.purge(DeadLetterQuery(delivery_ids=[crm[0].delivery_id])) == 1
    assert await store.attempts.dead_letter(crm[0].delivery_id) is None
    assert await dls.purge(DeadLetterQuery(subscription="crm")) == 2
    assert await dls.purge(DeadLetterQuery(subscription="crm")) == 0
    left = await store.attempts.find_dead_letters(DeadLetterQuery())
    assert [d.delivery_id for d in left] == [shop.delivery_id]
    assert server.queues == {}  # purging sends nothing


@pytest.mark.rabbitmq
async def test_replay_on_rabbitmq(store: SqlStore, rabbitmq_url: str, namespace: str) -> None:
    harness = Harness("rabbitmq", rabbitmq_url, Topology(namespace), UNREACHABLE_AMQP)
    try:
        queue = harness.sub("crm")
        broker: Broker = harness.broker()
        await broker.start([Binding(queue, ("com.test.#",))])
        letters = [await dead(store, "crm", event()) for _ in range(620)]  # two pages
        dls = DeadLetters(broker, store.attempts, queues(harness.topology, "crm"))

        assert await dls.replay(DeadLetterQuery(subscription="crm")) == 620

        deadline = time.monotonic() + 10  # each replay is due a moment after its publish
        while (await broker.queue_depths()).get(queue, 0) < 620 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        back = await harness.read(queue)
        assert sorted(m.event.id for m in back) == sorted(d.event_id for d in letters)
        assert await store.attempts.find_dead_letters(DeadLetterQuery(subscription="crm")) == []
    finally:
        await harness.cleanup()
