"""Pull subscriptions on every broker kind: receipts, long polls, acks, the visibility timeout
counted as an attempt, dead letters, and no event handed to two pulls at once."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from hookhub.broker import Binding, Broker, Topology
from hookhub.config import SubscriptionConfig
from hookhub.events import Event
from hookhub.fanout.sender import delivery_id
from hookhub.metrics import Metrics
from hookhub.pull import PULLED, RECEIPT_EXTENSION, Pulled, Puller
from hookhub.store import Store, StoreUnavailable, open_store
from tests.broker._support import UNREACHABLE_AMQP, UNREACHABLE_MEMORY, Harness

VISIBILITY = 0.5
TYPES = ["com.example.#"]


def config(**changes: Any) -> SubscriptionConfig:
    settings: dict[str, Any] = {
        "mode": "pull",
        "types": TYPES,
        "token": "pull-token",
        "visibility_timeout": VISIBILITY,
        "max_attempts": 3,
    }
    settings.update(changes)
    return SubscriptionConfig.model_validate(settings)


def event(n: int, **changes: Any) -> Event:
    fields: dict[str, Any] = {
        "id": f"evt-{n}",
        "source": "tests/pull",
        "type": "com.example.created",
        "data": f'{{"n": {n}}}'.encode(),
        "datacontenttype": "application/json",
    }
    fields.update(changes)
    return Event(**fields)


@dataclass
class PullEnv:
    harness: Harness
    broker: Broker
    store: Store
    puller: Puller
    configs: dict[str, SubscriptionConfig] = field(default_factory=dict)

    def queue(self, name: str) -> str:
        return self.harness.topology.subscription_queue(name)

    async def pull(self, name: str, max: int = 100, wait: float = 0.0) -> list[Pulled]:
        return await self.puller.pull(name, self.configs[name], self.queue(name), max, wait)

    async def publish(self, *events: Event) -> None:
        await self.broker.publish(list(events))

    def counted(self, metric: str, **labels: str) -> float | None:
        registry = self.puller.metrics.registry  # type: ignore[union-attr]
        return registry.get_sample_value(f"hookhub_{metric}", {"subscription": "orders", **labels})

    async def pull_after_visibility(self, name: str, max: int = 100) -> list[Pulled]:
        """A pull long enough for copies scheduled by an earlier pull to come due."""
        return await self.pull(name, max, wait=VISIBILITY * 3)


@pytest.fixture(params=["memory", "sqlite", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
async def env(request: pytest.FixtureRequest, namespace: str, tmp_path: Any) -> AsyncIterator[PullEnv]:
    topology = Topology(namespace)
    if request.param == "rabbitmq":
        harness = Harness("rabbitmq", request.getfixturevalue("rabbitmq_url"), topology, UNREACHABLE_AMQP)
    elif request.param == "memory":
        harness = Harness("memory", "memory://", topology, UNREACHABLE_MEMORY)
    else:
        harness = Harness("sqlite", f"sqlite:///{tmp_path}/broker.db", topology, "")
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    try:
        await store.start()
        configs = {"orders": config(), "audit": config(token="audit-token")}
        broker = harness.broker()
        await broker.start([Binding(harness.sub(name), tuple(c.types)) for name, c in configs.items()])
        puller = Puller(broker, store.receipts, store.attempts, metrics=Metrics())
        yield PullEnv(harness, broker, store, puller, configs)
    finally:
        await harness.cleanup()
        await store.close()


def ids(pulled: list[Pulled]) -> list[str]:
    return [p.event.id for p in pulled]


async def test_pull_hands_out_events_with_receipts(env: PullEnv) -> None:
    sent = [event(n) for n in range(5)]
    await env.publish(*sent)
    pulled = await env.pull("orders", wait=2)
    assert sorted(ids(pulled)) == sorted(e.id for e in sent)
    assert all(p.attempt == 1 for p in pulled)
    assert len({p.receipt for p in pulled}) == 5
    by_id = {e.id: e for e in sent}
    for p in pulled:
        assert p.event.attributes() == by_id[p.event.id].attributes()  # no hub tag leaks out
        assert p.event.data == by_id[p.event.id].data
        receipt = await env.store.receipts.get(p.receipt)
        assert receipt is not None and receipt.subscription == "orders" and receipt.acked_at is None
        assert receipt.delivery_id == delivery_id("orders", p.event) and receipt.attempt == 1
        log = await env.store.attempts.for_delivery(receipt.delivery_id)
        assert [(a.attempt, a.verdict) for a in log] == [(1, PULLED)]


async def test_untaken_leases_go_back_untouched(env: PullEnv) -> None:
    await env.publish(*(event(n) for n in range(5)))
    first = await env.pull("orders", max=2, wait=2)
    assert len(first) == 2
    rest = await env.pull("orders", max=10, wait=2)
    assert sorted(ids(first) + ids(rest)) == [f"evt-{n}" for n in range(5)]
    assert all(p.attempt == 1 for p in rest)  # given back as they were, not counted as an attempt


async def test_long_poll_returns_when_an_event_arrives(env: PullEnv) -> None:
    async def publish_later() -> None:
        await asyncio.sleep(0.4)
        await env.publish(event(1))

    started = time.monotonic()
    publisher = asyncio.create_task(publish_later())
    pulled = await env.pull("orders", wait=10)
    elapsed = time.monotonic() - started
    await publisher
    assert ids(pulled) == ["evt-1"]
    assert 0.35 <= elapsed < 5, elapsed


async def test_an_empty_queue_answers_after_wait(env: PullEnv) -> None:
    started = time.monotonic()
    assert await env.pull("orders", wait=0.3) == []
    assert 0.25 <= time.monotonic() - started < 3


async def test_acked_events_do_not_come_back(env: PullEnv) -> None:
    await env.publish(event(1), event(2))
    pulled = await env.pull("orders", wait=2)
    assert await env.puller.ack("orders", [p.receipt for p in pulled]) == 2
    assert await env.puller.ack("orders", [p.receipt for p in pulled]) == 0  # once only
    assert env.counted("deliveries_total", verdict="delivered") == 2
    assert await env.pull_after_visibility("orders") == []
    for p in pulled:
        log = await env.store.attempts.for_delivery(delivery_id("orders", p.event))
        assert [(a.attempt, a.verdict) for a in log] == [(1, PULLED), (1, "delivered")]
    assert await env.harness.read(env.queue("orders")) == []  # the copies were dropped, not kept


async def test_an_unacked_event_comes_back_after_the_visibility_timeout(env: PullEnv) -> None:
    await env.publish(event(1))
    (first,) = await env.pull("orders", wait=2)
    assert await env.pull("orders", wait=VISIBILITY / 3) == []  # hidden meanwhile
    (again,) = await env.pull_after_visibility("orders")
    assert again.event.id == "evt-1" and again.attempt == 2
    assert again.receipt != first.receipt
    assert RECEIPT_EXTENSION not in again.event.extensions
    log = await env.store.attempts.for_delivery(delivery_id("orders", again.event))
    assert [(a.attempt, a.verdict) for a in log] == [(1, PULLED), (1, "retry"), (2, PULLED)]
    assert log[1].error == f"not acknowledged within {VISIBILITY:g}s"
    assert await env.puller.ack("orders", [again.receipt]) == 1
    assert await env.pull_after_visibility("orders") == []


async def test_a_late_ack_drops_the_returning_copy(env: PullEnv) -> None:
    await env.publish(event(1))
    (first,) = await env.pull("orders", wait=2)
    await asyncio.sleep(VISIBILITY * 1.5)  # the copy is due now, but nobody pulled it yet
    assert await env.puller.ack("orders", [first.receipt]) == 1
    assert await env.pull_after_visibility("orders") == []


async def test_out_of_attempts_is_a_dead_letter(env: PullEnv) -> None:
    env.configs["orders"] = config(max_attempts=2)
    sent = event(7)
    await env.publish(sent)
    (one,) = await env.pull("orders", wait=2)
    (two,) = await env.pull_after_visibility("orders")
    assert (one.attempt, two.attempt) == (1, 2)
    assert await env.pull_after_visibility("orders") == []
    did = delivery_id("orders", one.event)
    dead = await env.store.attempts.dead_letter(did)
    assert dead is not None and dead.attempts == 2 and dead.subscription == "orders"
    assert dead.last_error == f"not acknowledged within {VISIBILITY:g}s"
    assert dead.attributes == sent.attributes() and dead.data == sent.data  # replayable, untagged
    log = await env.store.attempts.for_delivery(did)
    assert [a.verdict for a in log] == [PULLED, "retry", PULLED, "dead"]
    assert env.counted("dead_letters_total") == 1 and env.counted("deliveries_total", verdict="retry") == 1
    assert await env.harness.read(env.queue("orders")) == []
    # the consumer's ack comes too late: the dead letter stands, nothing is counted delivered
    assert await env.puller.ack("orders", [two.receipt]) == 0
    assert await env.store.attempts.dead_letter(did) is not None
    assert [a.verdict for a in await env.store.attempts.for_delivery(did)][-1] == "dead"


async def test_concurrent_pulls_never_share_an_event(env: PullEnv) -> None:
    env.configs["orders"] = config(visibility_timeout=60)  # no copy comes back during the test
    await env.publish(*(event(n) for n in range(40)))
    batches = await asyncio.gather(*(env.pull("orders", max=15, wait=1) for _ in range(4)))
    seen = [i for batch in batches for i in ids(batch)]
    assert len(seen) == len(set(seen))
    while len(seen) < 40:
        more = await env.pull("orders", max=40, wait=1)
        assert more, f"only {len(seen)} of 40 events handed out"
        seen += ids(more)
    assert sorted(seen) == sorted(f"evt-{n}" for n in range(40))
    assert all(p.attempt == 1 for batch in batches for p in batch)


async def test_an_ack_for_another_subscriptions_receipt_is_ignored(env: PullEnv) -> None:
    await env.publish(event(1))
    (mine,) = await env.pull("orders", wait=2)
    assert await env.puller.ack("audit", [mine.receipt, "no-such-receipt"]) == 0
    assert (await env.store.receipts.get(mine.receipt)).acked_at is None  # type: ignore[union-attr]
    (theirs,) = await env.pull("audit", wait=2)  # the audit subscription's own copy is untouched
    assert theirs.event.id == "evt-1" and theirs.attempt == 1
    assert await env.puller.ack("orders", [mine.receipt]) == 1


async def test_a_forged_receipt_tag_on_a_new_event_is_stripped(env: PullEnv) -> None:
    await env.publish(event(1))
    (real,) = await env.pull("orders", wait=2)
    await env.puller.ack("orders", [real.receipt])
    forged = event(2, extensions={RECEIPT_EXTENSION: real.receipt})
    await env.publish(forged)
    (pulled,) = await env.pull("orders", wait=2)  # a fresh event, though tagged with an acked receipt
    assert pulled.event.id == "evt-2" and pulled.attempt == 1
    assert RECEIPT_EXTENSION not in pulled.event.extensions


async def test_any_replica_may_take_the_ack(env: PullEnv) -> None:
    """Knative: the ack, and the pull after the visibility timeout, may reach another process."""
    other_broker = env.harness.broker()
    await other_broker.start([Binding(env.queue(name), tuple(TYPES)) for name in env.configs])
    other = Puller(other_broker, env.store.receipts, env.store.attempts)
    await env.publish(event(1), event(2))
    pulled = {p.event.id: p for p in await env.pull("orders", wait=2)}
    assert set(pulled) == {"evt-1", "evt-2"}
    assert await other.ack("orders", [pulled["evt-1"].receipt]) == 1
    config, queue = env.configs["orders"], env.queue("orders")
    (back,) = await other.pull("orders", config, queue, 100, VISIBILITY * 3)
    assert (back.event.id, back.attempt) == ("evt-2", 2)


async def test_a_store_failure_gives_the_events_back(env: PullEnv, tmp_path: Any) -> None:
    await env.publish(event(1), event(2))
    with sqlite3.connect(tmp_path / "store.db") as db:
        db.execute("DROP TABLE pull_receipts")  # the receipts cannot be written: the store is down
    with pytest.raises(StoreUnavailable):
        await env.pull("orders", wait=2)
    await env.store.start()  # back
    pulled = await env.pull("orders", wait=2)
    assert sorted(ids(pulled)) == ["evt-1", "evt-2"] and all(p.attempt == 1 for p in pulled)
