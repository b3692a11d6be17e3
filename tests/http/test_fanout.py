"""Fan-out end to end on both brokers: real local subscribers that succeed, fail, refuse, stall
and vanish; every accepted event reaches every matching subscriber; outcomes are logged."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from hookhub.events import Event
from hookhub.fanout.sender import delivery_id
from hookhub.store.base import SubscriptionState
from tests.http.conftest import PRODUCER_TOKEN, HubClient, base_config, delete_namespace, running_hub
from tests.support.subscriber import Subscriber, running_subscriber

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
FAST = {"initial": "50ms", "max": "200ms", "multiplier": 2}
WAIT = 15.0  # generous: RabbitMQ's shortest retry tier is a second


@pytest.fixture
def subscriber() -> Iterator[Subscriber]:
    with running_subscriber() as sub:
        yield sub


def subscription(sub: Subscriber, path: str, types: list[str], **extra: Any) -> dict[str, Any]:
    return {"url": sub.url(path), "types": types, "secret": SECRET, "backoff": FAST, "timeout": "1s", **extra}


@pytest.fixture
async def fan(
    broker_url: str, tmp_path: Any, namespace: str, subscriber: Subscriber
) -> AsyncIterator[HubClient]:
    config = base_config(broker_url, f"sqlite:///{tmp_path}/store.db", namespace)
    config["subscriptions"] = {
        "crm": subscription(subscriber, "/crm", ["com.acme.invoice.*"], max_attempts=4),
        "audit": subscription(subscriber, "/audit", ["com.acme.#"], max_attempts=4),
        "other": subscription(subscriber, "/other", ["com.elsewhere.*"]),
        "gh": subscription(subscriber, "/gh", ["com.github.#"]),
    }
    async with running_hub(config) as hub:
        yield hub
        await delete_namespace(broker_url, hub.hub)


async def produce(hub: HubClient, type_: str = "com.acme.invoice.paid", n: int = 1) -> list[str]:
    events = [
        {
            "specversion": "1.0",
            "id": uuid.uuid4().hex,
            "source": "/billing",
            "type": type_,
            "datacontenttype": "application/json",
            "data": {"n": i},
        }
        for i in range(n)
    ]
    response = await hub.client.post(
        "/events",
        content=json.dumps(events),
        headers={
            "Authorization": f"Bearer {PRODUCER_TOKEN}",
            "Content-Type": "application/cloudevents-batch+json",
        },
    )
    assert response.status_code == 202, response.text
    return [e["id"] for e in events]


async def test_every_event_reaches_every_matching_subscriber_once(
    fan: HubClient, subscriber: Subscriber
) -> None:
    ids = set(await produce(fan, n=30))
    assert await subscriber.wait_for_ids_async(30, WAIT, path="/crm") == ids
    assert await subscriber.wait_for_ids_async(30, WAIT, path="/audit") == ids
    await asyncio.sleep(0.5)
    assert len(subscriber.requests("/crm")) == 30  # no duplicates in normal operation
    assert subscriber.requests("/other") == []


async def test_delivery_is_binary_cloudevent_signed_per_standard_webhooks(
    fan: HubClient, subscriber: Subscriber
) -> None:
    (event_id,) = await produce(fan)
    (received,) = await subscriber.wait_for_async(1, WAIT, path="/crm")
    headers = received.header_dict()
    assert headers["ce-id"] == event_id and headers["ce-source"] == "/billing"
    assert headers["ce-type"] == "com.acme.invoice.paid" and headers["ce-specversion"] == "1.0"
    assert headers["ce-correlationid"] == event_id and "ce-time" in headers
    assert headers["Content-Type"] == "application/json" and json.loads(received.body) == {"n": 0}
    assert headers["hookhub-attempt"] == "1"
    Webhook(SECRET).verify(received.body, headers)  # raises if the signature is wrong
    assert "Authorization" not in headers and PRODUCER_TOKEN not in json.dumps(headers)


async def test_failing_subscriber_is_retried_with_a_stable_delivery_id(
    fan: HubClient, subscriber: Subscriber
) -> None:
    subscriber.fail_times(2, 503, path="/crm")
    (event_id,) = await produce(fan)
    received = await subscriber.wait_for_async(3, WAIT, path="/crm")
    assert [r.headers["hookhub-attempt"] for r in received] == ["1", "2", "3"]
    assert len({r.headers["webhook-id"] for r in received}) == 1
    attempts = await wait_attempts(fan, event_id, "crm", 3)
    assert [a.verdict for a in attempts] == ["retry", "retry", "delivered"]
    assert [a.status_code for a in attempts] == [503, 503, 200]


async def test_4xx_is_dead_lettered_at_once_and_others_unaffected(
    fan: HubClient, subscriber: Subscriber
) -> None:
    subscriber.status(400, path="/crm")
    (event_id,) = await produce(fan)
    await subscriber.wait_for_async(1, WAIT, path="/audit")
    attempts = await wait_attempts(fan, event_id, "crm", 1)
    assert [a.verdict for a in attempts] == ["dead"]
    dead = await fan.hub.store.attempts.dead_letters("crm")
    assert [d.event_id for d in dead] == [event_id] and dead[0].last_status == 400
    await asyncio.sleep(0.5)
    assert len(subscriber.requests("/crm")) == 1


async def test_exhausted_attempts_become_a_dead_letter_with_every_attempt(
    fan: HubClient, subscriber: Subscriber
) -> None:
    subscriber.status(500, path="/crm")
    (event_id,) = await produce(fan)
    attempts = await wait_attempts(fan, event_id, "crm", 4)
    assert [a.verdict for a in attempts] == ["retry", "retry", "retry", "dead"]
    (dead,) = await fan.hub.store.attempts.dead_letters("crm")
    assert dead.attempts == 4 and dead.data == b'{"n":0}'


async def test_429_retry_after_is_honoured(fan: HubClient, subscriber: Subscriber) -> None:
    subscriber.script(*_steps((429, {"Retry-After": "1"}, 1)), path="/crm")
    await produce(fan)
    first, second = await subscriber.wait_for_async(2, WAIT, path="/crm")
    assert second.at - first.at >= 0.95


async def test_410_disables_the_subscription_and_events_wait(fan: HubClient, subscriber: Subscriber) -> None:
    subscriber.status(410, path="/crm")
    await produce(fan)
    await subscriber.wait_for_async(1, WAIT, path="/crm")
    await wait_until(lambda: _state(fan, "crm"), SubscriptionState.DISABLED)
    ids = await produce(fan, n=3)
    await subscriber.wait_for_ids_async(4, WAIT, path="/audit")  # the other subscriber goes on
    await asyncio.sleep(1.0)
    assert len(subscriber.requests("/crm")) == 1  # no more attempts while disabled
    depth = (await fan.hub.broker.queue_depths())[fan.hub.queue_for["crm"]]
    assert depth == 4  # the 410'd event and the three new ones wait in the queue
    subscriber.ok(path="/crm")
    await fan.hub.store.subscriptions.set("crm", SubscriptionState.ACTIVE)
    received = await subscriber.wait_for_ids_async(4, WAIT, path="/crm")
    assert set(ids) <= received


async def test_stalled_subscriber_times_out_and_never_delays_another(
    fan: HubClient, subscriber: Subscriber
) -> None:
    subscriber.stall(3.0, path="/crm")  # past the 1 s timeout, every time
    started = time.monotonic()
    ids = await produce(fan, n=20)
    assert await subscriber.wait_for_ids_async(20, WAIT, path="/audit") == set(ids)
    assert time.monotonic() - started < 5.0
    attempts = await wait_attempts(fan, ids[0], "crm", 1, exact=False)
    assert attempts[0].status_code is None and "timeout" in (attempts[0].error or "")


async def test_vanished_subscriber_is_retried_until_it_comes_back(
    broker_url: str, tmp_path: Any, namespace: str, subscriber: Subscriber
) -> None:
    config = base_config(broker_url, f"sqlite:///{tmp_path}/store.db", namespace)
    patient = {"initial": "300ms", "max": "1s", "multiplier": 2}  # 20 attempts: minutes of patience
    config["subscriptions"] = {
        "crm": subscription(subscriber, "/crm", ["com.acme.#"], backoff=patient, max_attempts=20)
    }
    async with running_hub(config) as hub:
        try:
            subscriber.stop()  # connection refused
            (event_id,) = await produce(hub)
            attempts = await wait_attempts(hub, event_id, "crm", 1, exact=False)
            assert attempts[0].status_code is None and attempts[0].verdict == "retry"
            subscriber.start()
            assert event_id in await subscriber.wait_for_ids_async(1, WAIT, path="/crm")
        finally:
            await delete_namespace(broker_url, hub.hub)


async def test_rate_limit_spaces_deliveries(
    broker_url: str, tmp_path: Any, namespace: str, subscriber: Subscriber
) -> None:
    config = base_config(broker_url, f"sqlite:///{tmp_path}/store.db", namespace)
    config["subscriptions"] = {"slow": subscription(subscriber, "/slow", ["com.acme.#"], rate_limit=10)}
    async with running_hub(config) as hub:
        await produce(hub, n=25)
        received = await subscriber.wait_for_async(25, WAIT, path="/slow")
        span = received[-1].at - received[0].at
        assert span >= 1.2  # 25 deliveries at 10/s with a burst of 10: at least ~1.5 s
        await delete_namespace(broker_url, hub.hub)


async def test_max_in_flight_bounds_concurrency(
    broker_url: str, tmp_path: Any, namespace: str, subscriber: Subscriber
) -> None:
    config = base_config(broker_url, f"sqlite:///{tmp_path}/store.db", namespace)
    config["subscriptions"] = {"two": subscription(subscriber, "/two", ["com.acme.#"], max_in_flight=2)}
    subscriber.stall(0.3, path="/two")
    async with running_hub(config) as hub:
        await produce(hub, n=6)
        received = await subscriber.wait_for_async(6, WAIT, path="/two")
        arrivals = sorted(r.at for r in received)
        # two at a time, 0.3 s each: the 5th cannot start before ~0.6 s after the 1st
        assert arrivals[4] - arrivals[0] >= 0.5
        await delete_namespace(broker_url, hub.hub)


def _steps(*specs: tuple[int, dict[str, str], int | None]) -> list[Any]:
    from tests.support.subscriber import Step

    return [Step(status, headers, times=times) for status, headers, times in specs] + [Step(200)]


async def _state(hub: HubClient, name: str) -> SubscriptionState:
    return (await hub.hub.store.subscriptions.all()).get(name, SubscriptionState.ACTIVE)


async def wait_until(probe: Any, expected: Any, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while (value := await probe()) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r}, expected {expected!r}")
        await asyncio.sleep(0.05)


async def wait_attempts(
    hub: HubClient, event_id: str, subscription: str, n: int, timeout: float = WAIT, *, exact: bool = True
) -> list[Any]:
    """The logged attempts of one event to one subscription, once there are `n` of them
    (exactly `n`, unless `exact` is false: retries may already have added more)."""
    deadline = time.monotonic() + timeout
    while True:
        attempts = [
            a
            for a in await hub.hub.store.attempts.for_event("/billing", event_id)
            if a.subscription == subscription
        ]
        if len(attempts) >= n or time.monotonic() > deadline:
            assert len(attempts) == n if exact else len(attempts) >= n, attempts
            return attempts
        await asyncio.sleep(0.05)


def test_delivery_ids_differ_per_subscription() -> None:
    event = Event(id="e1", source="/s", type="t", data=b"")
    assert delivery_id("a", event) == delivery_id("a", event) != delivery_id("b", event)


async def test_provider_retries_of_one_event_are_delivered_once(
    fan: HubClient, subscriber: Subscriber
) -> None:
    from tests.http.test_ingest_http import github_request

    body, headers = github_request("delivery-retried")
    headers["X-GitHub-Event"] = "issues"
    statuses = [
        (await fan.client.post("/webhooks/github", content=body, headers=headers)).status_code
        for _ in range(3)
    ]
    assert statuses == [202, 200, 200]
    (received,) = await subscriber.wait_for_async(1, WAIT, path="/gh")
    assert received.headers["ce-type"] == "com.github.issues.opened"
    await asyncio.sleep(1.0)
    assert len(subscriber.requests("/gh")) == 1


async def test_metrics_count_deliveries_and_dead_letters(fan: HubClient, subscriber: Subscriber) -> None:
    subscriber.status(400, path="/crm")
    await produce(fan)
    await subscriber.wait_for_async(1, WAIT, path="/audit")
    await subscriber.wait_for_async(1, WAIT, path="/crm")
    await asyncio.sleep(0.3)
    metrics = (await fan.client.get("/metrics")).text
    assert 'hookhub_deliveries_total{subscription="audit",verdict="delivered"} 1.0' in metrics
    assert 'hookhub_deliveries_total{subscription="crm",verdict="dead"} 1.0' in metrics
    assert 'hookhub_dead_letters_total{subscription="crm"} 1.0' in metrics
    assert 'hookhub_delivery_duration_seconds_count{subscription="audit"} 1.0' in metrics
    assert 'hookhub_subscription_active{subscription="crm"} 1.0' in metrics
    assert f'hookhub_queue_depth{{queue="{fan.hub.queue_for["crm"]}"}}' in metrics
