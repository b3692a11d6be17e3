"""The dispatcher's stops and waits: a pause with POSTs under way, and events waiting for a rate
limit, neither lose nor repeat an event. On both brokers, with a real subscriber."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from hookhub.events import Event
from hookhub.fanout import dispatcher as dispatcher_module
from hookhub.store.base import SubscriptionState
from tests.http.conftest import HubClient, base_config, delete_namespace, running_hub
from tests.support.subscriber import Subscriber, running_subscriber

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def subscriber() -> Any:
    with running_subscriber() as sub:
        yield sub


def hub_config(broker_url: str, tmp_path: Path, namespace: str, url: str, **sub: Any) -> dict[str, Any]:
    config = base_config(broker_url, f"sqlite:///{tmp_path}/store.db", namespace)
    config["subscriptions"] = {
        "s": {"url": url, "types": ["com.test.#"], "secret": SECRET, "timeout": "5s", **sub}
    }
    return config


async def publish(hub: HubClient, n: int) -> list[str]:
    events = [Event(id=uuid.uuid4().hex, source="/test", type="com.test.thing", data=b"{}") for _ in range(n)]
    await hub.hub.ingestor.ingest(events, origin="test")
    return [e.id for e in events]


def repeats(subscriber: Subscriber, path: str) -> list[str]:
    counts = Counter(r.ce_id for r in subscriber.requests(path))
    return [i for i, n in counts.items() if n > 1 and i is not None]


async def test_pause_with_posts_under_way_neither_loses_nor_repeats(
    broker_url: str, tmp_path: Path, namespace: str, subscriber: Subscriber
) -> None:
    subscriber.stall(1.0, path="/p")
    config = hub_config(broker_url, tmp_path, namespace, subscriber.url("/p"), max_in_flight=4)
    async with running_hub(config) as hub:
        try:
            ids = await publish(hub, 12)
            await subscriber.wait_for_async(4, timeout=10, path="/p")
            await hub.hub.store.subscriptions.set("s", SubscriptionState.PAUSED, "test")
            await hub.hub.dispatcher.sync_states()  # type: ignore[union-attr]
            # the four under way finished and were recorded; nothing else went out
            delivered = [
                a
                for i in ids
                for a in await hub.hub.store.attempts.for_event("/test", i)
                if a.verdict == "delivered"
            ]
            assert len(delivered) == 4
            await asyncio.sleep(0.5)
            assert len(subscriber.requests("/p")) == 4

            subscriber.ok(path="/p")
            await hub.hub.store.subscriptions.set("s", SubscriptionState.ACTIVE)
            await hub.hub.dispatcher.sync_states()  # type: ignore[union-attr]
            assert await subscriber.wait_for_ids_async(12, timeout=15, path="/p") == set(ids)
            await asyncio.sleep(0.3)
            assert repeats(subscriber, "/p") == []
            assert {r.headers["hookhub-attempt"] for r in subscriber.requests("/p")} == {"1"}
        finally:
            await delete_namespace(broker_url, hub.hub)


async def test_events_waiting_for_the_rate_limit_are_not_handed_out_twice(
    broker_url: str, tmp_path: Path, namespace: str, subscriber: Subscriber, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `rate_limit: 4` and 16 prefetched events, the last waits ~4 s: four times its lease."""
    monkeypatch.setattr(dispatcher_module, "LEASE_MARGIN_SECONDS", 0.5)
    subscriber.ok(path="/r")
    config = hub_config(
        broker_url, tmp_path, namespace, subscriber.url("/r"), timeout="500ms", rate_limit=4, max_in_flight=8
    )
    async with running_hub(config) as hub:
        try:
            ids = await publish(hub, 16)
            assert await subscriber.wait_for_ids_async(16, timeout=20, path="/r") == set(ids)
            await asyncio.sleep(1.5)  # a second copy of an expired lease would arrive by now
            assert repeats(subscriber, "/r") == []
            assert len(subscriber.requests("/r")) == 16
        finally:
            await delete_namespace(broker_url, hub.hub)
