"""Runtime subscriptions end to end, on the SQLite broker and on RabbitMQ, through the admin API
of a running hub: created, changed, paused, resumed, rotated and deleted without a restart, with
real subscribers on 127.0.0.1, and the same state after a restart."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.http.conftest import HubClient, delete_namespace, running_hub
from tests.ops._live import ADMIN, WAIT, admin_get, admin_post, produce, push, verified
from tests.ops._live import hub_config as live_config
from tests.support.subscriber import Subscriber


def hub_config(broker_url: str, tmp_path: Any, namespace: str, subscriber: Subscriber) -> dict[str, Any]:
    return live_config(broker_url, tmp_path, namespace, filed=push(subscriber.url("/filed"), "com.acme.#"))


async def create(hub: HubClient, name: str, **body: Any) -> dict[str, Any]:
    return await admin_post(hub, "/subscriptions", {"name": name, **body}, status=201)


async def show(hub: HubClient, name: str) -> dict[str, Any]:
    return await admin_get(hub, f"/subscriptions/{name}")


async def test_created_changed_and_deleted_at_run_time(
    broker_url: str, tmp_path: Any, namespace: str, subscriber: Subscriber
) -> None:
    async with running_hub(hub_config(broker_url, tmp_path, namespace, subscriber)) as hub:
        try:
            made = await create(hub, "crm", url=subscriber.url("/crm"), types=["com.acme.invoice.*"])
            assert made["origin"] == "api" and made["secret"].startswith("whsec_")
            (event_id,) = await produce(hub)
            (got,) = await subscriber.wait_for_async(1, WAIT, path="/crm")
            assert got.ce_id == event_id and verified(made["secret"], got)

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
            assert verified(old, got) and verified(new, got)  # either key verifies it

            # without overlap the old secret stops signing at once
            response = await hub.client.post(
                "/admin/subscriptions/crm/rotate-secret", json={"overlap": "0s"}, headers=ADMIN
            )
            newest = response.json()["secret"]
            await produce(hub)
            got = (await subscriber.wait_for_async(2, WAIT, path="/crm"))[-1]
            assert verified(newest, got) and not verified(new, got) and not verified(old, got)
        finally:
            await delete_namespace(broker_url, hub.hub)
