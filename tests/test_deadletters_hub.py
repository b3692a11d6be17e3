"""A replayed dead letter goes through the normal retry path of a running hub, on SQLite and
RabbitMQ, to a real subscriber: attempted again as attempt 1 under its delivery id, dead again if
it fails again (listed again, same id), delivered once the subscriber is fixed."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hookhub.events import Event
from hookhub.store.records import DeadLetter, DeadLetterQuery
from tests.http.conftest import HubClient, base_config, delete_namespace, running_hub
from tests.support.subscriber import Subscriber, running_subscriber

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture(params=["sqlite", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/broker.db"
    return str(request.getfixturevalue("rabbitmq_url"))


@pytest.fixture
def subscriber() -> Iterator[Subscriber]:
    with running_subscriber() as sub:
        yield sub


async def listed(hub: HubClient, timeout: float = 10.0) -> DeadLetter:
    """The one dead letter of subscription `s` not yet replayed, once the fan-out wrote it."""
    deadline = time.monotonic() + timeout
    while True:
        found = await hub.hub.store.attempts.find_dead_letters(DeadLetterQuery(subscription="s"))
        if found:
            assert len(found) == 1
            return found[0]
        assert time.monotonic() < deadline, "no dead letter appeared"
        await asyncio.sleep(0.05)


async def test_a_replayed_dead_letter_takes_the_normal_retry_path(
    broker: str, tmp_path: Path, namespace: str, subscriber: Subscriber
) -> None:
    subscriber.status(400)  # a non-retryable answer: dead at once
    config = base_config(broker, f"sqlite:///{tmp_path}/store.db", namespace)
    config["subscriptions"] = {"s": {"url": subscriber.url("/s"), "types": ["com.test.#"], "secret": SECRET}}
    async with running_hub(config) as hub:
        try:
            event = Event(id=uuid.uuid4().hex, source="/test", type="com.test.thing", data=b'{"n": 1}')
            await hub.hub.ingestor.ingest([event], origin="test")
            first = await listed(hub)
            assert first.event_id == event.id

            assert await hub.hub.dead_letters.replay(DeadLetterQuery(subscription="s")) == 1
            await subscriber.wait_for_async(2, timeout=10, path="/s")
            again = await listed(hub)  # dead again, listed again under the same delivery id
            assert again.delivery_id == first.delivery_id and again.dead_at >= first.dead_at
            requests = subscriber.requests("/s")
            assert [r.headers["webhook-id"] for r in requests] == [first.delivery_id] * 2
            assert [r.headers["hookhub-attempt"] for r in requests] == ["1", "1"]
            assert requests[1].body == b'{"n": 1}'

            subscriber.ok(path="/s")
            assert await hub.hub.dead_letters.replay(DeadLetterQuery(delivery_ids=[first.delivery_id])) == 1
            await subscriber.wait_for_async(3, timeout=10, path="/s")
            deadline = time.monotonic() + 5
            while True:
                attempts = await hub.hub.store.attempts.for_delivery(first.delivery_id)
                if attempts and attempts[-1].verdict == "delivered":
                    break
                assert time.monotonic() < deadline, attempts
                await asyncio.sleep(0.05)
            assert [a.verdict for a in attempts] == ["dead", "dead", "delivered"]
            assert await hub.hub.store.attempts.find_dead_letters(DeadLetterQuery(subscription="s")) == []
            await asyncio.sleep(0.3)
            assert len(subscriber.requests("/s")) == 3  # nothing more
        finally:
            await delete_namespace(broker, hub.hub)
