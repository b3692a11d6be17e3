"""The Ingestor against real brokers and stores: dedup, a refused record, and an unconfirmed
publish whose claims wait for the broker's late answer instead of being released at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from urllib.parse import urlparse

import pytest

from hookhub.broker import Binding, Broker, Topology
from hookhub.errors import Unavailable, Unprocessable
from hookhub.events import Event
from hookhub.ingest import Ingestor, IngestResult
from hookhub.store import SqlStore
from hookhub.store.base import ClaimStore
from hookhub.store.records import ACCEPTED, PENDING
from tests.broker._support import UNREACHABLE_AMQP, Harness, TCPProxy


def make_event(event_id: str = "evt-1") -> Event:
    return Event(id=event_id, source="/providers/test", type="com.test.paid", data=b'{"n": 1}')


@pytest.fixture
async def rabbit(rabbitmq_url: str, namespace: str) -> AsyncIterator[Harness]:
    harness = Harness("rabbitmq", rabbitmq_url, Topology(namespace), UNREACHABLE_AMQP)
    try:
        yield harness
    finally:
        await harness.cleanup()


@pytest.fixture
async def proxy(rabbitmq_url: str) -> AsyncIterator[TCPProxy]:
    target = urlparse(rabbitmq_url)
    p = TCPProxy(target.hostname or "127.0.0.1", target.port or 5672)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def started(harness: Harness, url: str | None = None, **kwargs: object) -> tuple[Broker, str]:
    queue = harness.sub("crm")
    broker = harness.broker(url, **kwargs)
    await broker.start([Binding(queue, ("#",))])
    return broker, queue


async def status_becomes(claims: ClaimStore, event: Event, expected: str | None, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while True:
        record = await claims.record(event.key)
        status = record.status if record is not None else None
        if status == expected or time.monotonic() > deadline:
            assert status == expected
            return
        await asyncio.sleep(0.02)


@pytest.mark.rabbitmq
async def test_accepted_then_duplicate(rabbit: Harness, store: SqlStore) -> None:
    broker, queue = await started(rabbit)
    ingestor = Ingestor(broker, store.claims, publish_timeout=5)
    event = make_event()
    assert await ingestor.ingest([event, event], origin="test") == [IngestResult.ACCEPTED] * 2
    await ingestor.drain()
    assert await ingestor.ingest([make_event()], origin="test") == [IngestResult.DUPLICATE]
    assert [m.message_id for m in await rabbit.read(queue)] == ["evt-1"]


@pytest.mark.rabbitmq
async def test_a_late_confirm_settles_the_claim_so_the_retry_is_a_duplicate(
    rabbit: Harness, store: SqlStore
) -> None:
    broker, queue = await started(rabbit)
    event = make_event()
    hasty = Ingestor(broker, store.claims, publish_timeout=1e-6)  # no broker confirms that fast
    with pytest.raises(Unavailable) as raised:
        await hasty.ingest([event], origin="test")
    assert raised.value.status == 503

    await status_becomes(store.claims, event, ACCEPTED)  # the confirm came after the 503
    retry = Ingestor(broker, store.claims, publish_timeout=5)
    assert await retry.ingest([make_event()], origin="test") == [IngestResult.DUPLICATE]
    assert [m.message_id for m in await rabbit.read(queue)] == ["evt-1"]  # published once


@pytest.mark.rabbitmq
async def test_an_unconfirmed_publish_keeps_its_claim_until_the_broker_says_no(
    rabbit: Harness, store: SqlStore, proxy: TCPProxy
) -> None:
    broker, queue = await started(rabbit, proxy.url, close_timeout=0.3)
    ingestor = Ingestor(broker, store.claims, publish_timeout=0.2)
    event = make_event()
    proxy.hold_replies()  # the publish goes out; its confirm does not come back
    with pytest.raises(Unavailable):
        await ingestor.ingest([event], origin="test")

    # still claimed a while later: a retry now must not publish a second copy
    await asyncio.sleep(0.3)
    await status_becomes(store.claims, event, PENDING, within=0)
    with pytest.raises(Unavailable):
        await ingestor.ingest([make_event()], origin="test")

    await broker.close()  # no confirm can come any more: not confirmed, so the claim is released
    await status_becomes(store.claims, event, None)
    fresh, _ = await started(rabbit)
    assert await Ingestor(fresh, store.claims).ingest([make_event()], origin="test") == [
        IngestResult.ACCEPTED
    ]
    # the held publish may have been stored too (at-least-once); the blocked retry added none
    assert [m.event.id for m in await rabbit.read(queue)] in (["evt-1"], ["evt-1", "evt-1"])


@pytest.mark.postgres
@pytest.mark.rabbitmq
async def test_a_record_the_store_refuses_is_a_422_for_that_request_only(
    rabbit: Harness, postgres_url: str
) -> None:
    store = SqlStore(postgres_url)
    await store.start()
    try:
        broker, _ = await started(rabbit)
        ingestor = Ingestor(broker, store.claims, publish_timeout=5)
        bad, good = make_event(f"bad-{time.time_ns()}"), make_event(f"good-{time.time_ns()}")
        # the origin (a provider or producer name) is not an event attribute: PostgreSQL refuses NUL
        results = await asyncio.gather(
            ingestor.ingest([bad], origin="bad\x00origin"),
            ingestor.ingest([good], origin="test"),
            return_exceptions=True,
        )
        assert isinstance(results[0], Unprocessable) and results[0].status == 422
        assert results[1] == [IngestResult.ACCEPTED]
        assert await store.claims.record(bad.key) is None
    finally:
        await store.close()
