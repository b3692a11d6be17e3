"""Runtime subscriptions end to end, on the SQLite broker and on RabbitMQ, through the admin API
of a running hub: created, changed, paused, resumed, rotated and deleted without a restart, with
real subscribers on 127.0.0.1, and the same state after a restart."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from tests.http.conftest import PRODUCER_TOKEN, HubClient, base_config, delete_namespace, running_hub
from tests.support.subscriber import Subscriber, running_subscriber

ADMIN = {"Authorization": "Bearer admin-token"}
FILE_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WAIT = 15.0


@pytest.fixture
def subscriber() -> Iterator[Subscriber]:
    with running_subscriber() as sub:
        yield sub


def hub_config(broker_url: str, tmp_path: Any, namespace: str, subscriber: Subscriber) -> dict[str, Any]:
    config = base_config(broker_url, f"sqlite:///{tmp_path}/store.db", namespace)
    config["admin_token"] = "admin-token"
    config["subscriptions"] = {
        "filed": {"url": subscriber.url("/filed"), "types": ["com.acme.#"], "secret": FILE_SECRET}
    }
    return config


async def produce(hub: HubClient, n: int = 1, type_: str = "com.acme.invoice.paid") -> list[str]:
    ids = [uuid.uuid4().hex for _ in range(n)]
    batch = [
        {"specversion": "1.0", "id": i, "source": "/billing", "type": type_, "data": {"n": k}}
        for k, i in enumerate(ids)
    ]
    response = await hub.client.post(
        "/events",
        json=batch,
        headers={
            "Authorization": f"Bearer {PRODUCER_TOKEN}",
            "Content-Type": "application/cloudevents-batch+json",
        },
    )
    assert response.status_code == 202, response.text
    return ids


async def create(hub: HubClient, name: str, **body: Any) -> dict[str, Any]:
    response = await hub.client.post("/admin/subscriptions", json={"name": name, **body}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def show(hub: HubClient, name: str) -> dict[str, Any]:
    response = await hub.client.get(f"/admin/subscriptions/{name}", headers=ADMIN)
    assert response.status_code == 200, response.text
    return dict(response.json())


def verified_by(secret: str, received: Any) -> bool:
    try:
        Webhook(secret).verify(received.body, received.header_dict())
    except Exception:
        return False
    return True


async def test_created_changed_and_deleted_at_run_time(
    broker_url: str, tmp_path: Any, namespace: str, subscriber: Subscriber
) -> None:
    async with running_hub(hub_config(broker_url, tmp_path, namespace, subscriber)) as hub:
        try:
            made = await create(hub, "crm", url=subscriber.url("/crm"), types=["com.acme.invoice.*"])
            assert made["origin"] == "api" and made["secret"].startswith("whsec_")
            (event_id,) = await produce(hub)
            (got,) = await subscriber.wait_for_async(1, WAIT, path="/crm")
            assert got.ce_id == event_id and verified_by(made["secret"], got)

            # a new url and narrower types take effect without a restart
            response = await hub.client.patch(
                "/admin/subscriptions/crm",
                json={"url": subscriber.url("/crm2"), "types": ["com.acme.invoice.paid"]},
                headers=ADMIN,
            )
            assert response.status_code == 200, response.text
            await produce(hub, type_="com.acme.invoice.void")  # no longer matches
            (paid,) = await produce(hub)
            (got,) = await subscriber.wait_for_async(1, WAIT, path="/crm2")
            assert got.ce_id == paid
            await asyncio.sleep(0.5)
            assert len(subscriber.requests("/crm")) == 1 and len(subscriber.requests("/crm2")) == 1

            # deleted: gone from the listing and from the broker, no more deliveries
            response = await hub.client.delete("/admin/subscriptions/crm", headers=ADMIN)
            assert response.status_code == 204, response.text
            assert (await hub.client.get("/admin/subscriptions/crm", headers=ADMIN)).status_code == 404
            queue = hub.hub.queue_of("crm")
            assert [q.name for q in await hub.hub.broker.describe([queue])] == []
            await produce(hub)
            await subscriber.wait_for_async(4, WAIT, path="/filed")  # the file subscription got all four
            assert len(subscriber.requests("/crm2")) == 1
        finally:
            await delete_namespace(broker_url, hub.hub)


async def test_a_file_subscription_is_read_only_through_the_api(
    broker_url: str, tmp_path: Any, namespace: str, subscriber: Subscriber
) -> None:
    async with running_hub(hub_config(broker_url, tmp_path, namespace, subscriber)) as hub:
        try:
            assert (await show(hub, "filed"))["origin"] == "file"
            for response in (
                await hub.client.patch("/admin/subscriptions/filed", json={"timeout": "2s"}, headers=ADMIN),
                await hub.client.delete("/admin/subscriptions/filed", headers=ADMIN),
                await hub.client.post("/admin/subscriptions/filed/rotate-secret", json={}, headers=ADMIN),
            ):
                assert response.status_code == 409, response.text
                assert "hookhub.yaml" in response.json()["error"]
            response = await hub.client.post(
                "/admin/subscriptions",
                json={"name": "filed", "url": subscriber.url("/x"), "types": ["a.b"]},
                headers=ADMIN,
            )
            assert response.status_code == 409
        finally:
            await delete_namespace(broker_url, hub.hub)


async def test_paused_events_are_retained_then_delivered_once_on_resume_across_a_restart(
    broker_url: str, tmp_path: Any, namespace: str, subscriber: Subscriber
) -> None:
    config = hub_config(broker_url, tmp_path, namespace, subscriber)
    async with running_hub(config) as hub:
        await create(hub, "crm", url=subscriber.url("/crm"), types=["com.acme.#"])
        response = await hub.client.post(
            "/admin/subscriptions/crm/pause", json={"reason": "maintenance"}, headers=ADMIN
        )
        assert response.status_code == 200, response.text
        assert response.json()["state"] == "paused"
        first = await produce(hub, 10)
        await subscriber.wait_for_async(10, WAIT, path="/filed")  # the others keep flowing
    # restarted: the runtime subscription and its pause are still there
    async with running_hub(config) as hub:
        try:
            state = await show(hub, "crm")
            assert (state["origin"], state["state"], state["state_reason"]) == (
                "api",
                "paused",
                "maintenance",
            )
            second = await produce(hub, 10)
            await asyncio.sleep(2.5)  # more than the dispatcher's poll: nothing may be delivered
            assert subscriber.requests("/crm") == []
            assert (await show(hub, "crm"))["depth"] == 20
            response = await hub.client.post("/admin/subscriptions/crm/resume", headers=ADMIN)
            assert response.status_code == 200 and response.json()["state"] == "active"
            got = await subscriber.wait_for_async(20, WAIT, path="/crm")
            await asyncio.sleep(0.5)
            ids = [r.ce_id for r in subscriber.requests("/crm")]
            assert sorted(ids) == sorted(first + second)  # every one, none twice
            assert len(got) == 20
        finally:
            await delete_namespace(broker_url, hub.hub)


async def test_a_rotated_secret_signs_alongside_the_old_one_during_the_overlap(
    broker_url: str, tmp_path: Any, namespace: str, subscriber: Subscriber
) -> None:
    async with running_hub(hub_config(broker_url, tmp_path, namespace, subscriber)) as hub:
        try:
            old = (await create(hub, "crm", url=subscriber.url("/crm"), types=["com.acme.#"]))["secret"]
            response = await hub.client.post(
                "/admin/subscriptions/crm/rotate-secret", json={"overlap": "1h"}, headers=ADMIN
            )
            assert response.status_code == 200, response.text
            new = response.json()["secret"]
            assert new != old and new.startswith("whsec_")
            assert (await show(hub, "crm"))["secret_rotating_until"] is not None
            await produce(hub)
            (got,) = await subscriber.wait_for_async(1, WAIT, path="/crm")
            assert len(got.header_dict()["webhook-signature"].split(" ")) == 2
            assert verified_by(old, got) and verified_by(new, got)  # either key verifies it

            # without overlap the old secret stops signing at once
            response = await hub.client.post(
                "/admin/subscriptions/crm/rotate-secret", json={"overlap": "0s"}, headers=ADMIN
            )
            newest = response.json()["secret"]
            await produce(hub)
            got = (await subscriber.wait_for_async(2, WAIT, path="/crm"))[-1]
            assert verified_by(newest, got) and not verified_by(new, got) and not verified_by(old, got)
        finally:
            await delete_namespace(broker_url, hub.hub)
