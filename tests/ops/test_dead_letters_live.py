"""Dead letters end to end through the admin API of a running hub, on the SQLite broker and on
RabbitMQ: a failing subscriber's events run out of their few quick retries, are listed
(filtered, paginated), shown with every attempt, replayed once the subscriber recovers (through
the normal retry path) and purged."""

from __future__ import annotations

import base64
import json
import time
from functools import partial
from typing import Any

from tests.http.conftest import HubClient, delete_namespace, running_hub
from tests.ops._live import (
    ADMIN,
    FAST_RETRY,
    admin_get,
    admin_post,
    hub_config,
    produce,
    push,
    until,
)
from tests.support.subscriber import Subscriber


def config(broker_url: str, tmp_path: Any, namespace: str, subscriber: Subscriber) -> dict[str, Any]:
    return hub_config(
        broker_url,
        tmp_path,
        namespace,
        s=push(subscriber.url("/s"), "com.acme.#", **FAST_RETRY),
        other=push(subscriber.url("/o"), "com.acme.order.*", **FAST_RETRY),
    )


async def dead_of(hub: HubClient, n: int, **params: Any) -> list[dict[str, Any]]:
    """The dead letters matching `params`, once there are `n` of them."""

    async def listed() -> tuple[list[dict[str, Any]]] | None:
        found = (await admin_get(hub, "/dead-letters", **params))["dead_letters"]
        return (found,) if len(found) == n else None  # a tuple: truthy even when none are wanted

    return (await until(listed, f"{n} dead letters {params}"))[0]


async def verdicts(hub: HubClient, delivery_id: str) -> list[str]:
    trace = await admin_get(hub, f"/dead-letters/{delivery_id}")
    return [a["verdict"] for a in trace["attempt_log"]]


async def test_listed_filtered_paginated_and_shown_with_every_attempt(
    broker_url: str, tmp_path: Any, namespace: str, subscriber: Subscriber
) -> None:
    subscriber.status(500, body=b"down for maintenance", path="/s")
    subscriber.status(400, path="/o")
    async with running_hub(config(broker_url, tmp_path, namespace, subscriber)) as hub:
        try:
            before = time.time()
            paid = await produce(hub, 3)
            (order,) = await produce(hub, type_="com.acme.order.created")
            dead = await dead_of(hub, 4, subscription="s")
            await dead_of(hub, 1, subscription="other")  # a 400 is dead at once
            after = time.time() + 1

            assert sorted(d["event_id"] for d in dead) == sorted([*paid, order])
            assert all(d["attempts"] == 2 and d["last_status"] == 500 for d in dead)
            assert [d["dead_at"] for d in dead] == sorted(d["dead_at"] for d in dead)  # oldest first
            assert len(subscriber.requests("/s")) == 8  # two attempts each, no more

            # filters: type, time, and both subscriptions together
            filtered = await admin_get(hub, "/dead-letters", subscription="s", type="com.acme.order.created")
            (only,) = filtered["dead_letters"]
            assert only["event_id"] == order
            assert len((await admin_get(hub, "/dead-letters"))["dead_letters"]) == 5
            assert (await admin_get(hub, "/dead-letters", since=after))["dead_letters"] == []
            assert (await admin_get(hub, "/dead-letters", until=before))["dead_letters"] == []
            window = await admin_get(hub, "/dead-letters", subscription="s", since=before, until=after)
            assert len(window["dead_letters"]) == 4
            response = await hub.client.get(
                "/admin/dead-letters", params={"since": after, "until": before}, headers=ADMIN
            )
            assert response.status_code == 400, response.text

            # pagination: pages of 3 cover all five once, in order, then stop
            first = await admin_get(hub, "/dead-letters", limit=3)
            assert len(first["dead_letters"]) == 3 and first["next_cursor"]
            second = await admin_get(hub, "/dead-letters", limit=3, cursor=first["next_cursor"])
            assert len(second["dead_letters"]) == 2 and second["next_cursor"] is None
            pages = [d["delivery_id"] for d in first["dead_letters"] + second["dead_letters"]]
            everything = [d["delivery_id"] for d in (await admin_get(hub, "/dead-letters"))["dead_letters"]]
            assert pages == everything
            response = await hub.client.get("/admin/dead-letters", params={"cursor": "bogus"}, headers=ADMIN)
            assert 400 <= response.status_code < 500 and "cursor" in response.json()["error"]

            # one, with its event and every attempt
            one = next(d for d in dead if d["event_id"] == paid[0])
            shown = await admin_get(hub, f"/dead-letters/{one['delivery_id']}")
            assert shown["event"]["attributes"]["id"] == paid[0]
            assert shown["event"]["attributes"]["type"] == "com.acme.invoice.paid"
            assert json.loads(base64.b64decode(shown["event"]["data_base64"])) == {"n": 0}
            assert shown["replayed_at"] is None
            log = shown["attempt_log"]
            assert [(a["attempt"], a["verdict"], a["status_code"]) for a in log] == [
                (1, "retry", 500),
                (2, "dead", 500),
            ]
            assert log[0]["next_attempt_at"] is not None and log[1]["next_attempt_at"] is None
            assert all(a["latency_ms"] >= 0 and "500" in (a["error"] or "") for a in log)
            sent = [r for r in subscriber.requests("/s") if r.ce_id == paid[0]]
            assert [r.headers["webhook-id"] for r in sent] == [one["delivery_id"]] * 2
            response = await hub.client.get("/admin/dead-letters/msg_" + "a" * 26, headers=ADMIN)
            assert response.status_code == 404 and "error" in response.json()
        finally:
            await delete_namespace(broker_url, hub.hub)


async def test_replayed_one_then_all_once_the_subscriber_recovers_and_purged(
    broker_url: str, tmp_path: Any, namespace: str, subscriber: Subscriber
) -> None:
    subscriber.status(503, path="/s")
    subscriber.status(400, path="/o")
    async with running_hub(config(broker_url, tmp_path, namespace, subscriber)) as hub:
        try:
            ids = await produce(hub, 3)
            (order,) = await produce(hub, type_="com.acme.order.created")
            dead = await dead_of(hub, 4, subscription="s")
            await dead_of(hub, 1, subscription="other")
            subscriber.ok(path="/s")  # recovered

            one = dead[0]
            replayed = await admin_post(hub, "/dead-letters/replay", {"delivery_ids": [one["delivery_id"]]})
            assert replayed == {"replayed": 1}
            await dead_of(hub, 3, subscription="s")  # no longer listed once replayed
            got = await subscriber.wait_for_async(9, 10, path="/s")
            assert got[-1].ce_id == one["event_id"] and got[-1].headers["hookhub-attempt"] == "1"
            assert got[-1].headers["webhook-id"] == one["delivery_id"]

            await until(lambda: _delivered(hub, one["delivery_id"]), "the replay delivered")
            shown = await admin_get(hub, f"/dead-letters/{one['delivery_id']}")
            assert shown["replayed_at"] is not None
            assert [a["verdict"] for a in shown["attempt_log"]] == ["retry", "dead", "delivered"]

            # replaying it again does nothing; replaying the subscription takes the other three
            assert await admin_post(hub, "/dead-letters/replay", {"delivery_ids": [one["delivery_id"]]}) == {
                "replayed": 0
            }
            assert await admin_post(hub, "/dead-letters/replay", {"subscription": "s"}) == {"replayed": 3}
            await subscriber.wait_for_async(12, 10, path="/s")
            await dead_of(hub, 0, subscription="s")
            late = [r.ce_id or "" for r in subscriber.requests("/s")[8:]]
            assert sorted(late) == sorted([*ids, order])  # each once, none twice
            for d in dead:
                await until(partial(_delivered, hub, d["delivery_id"]), f"{d['event_id']} delivered")

            # purge: a selector is required; with one, gone for good
            for body in ({}, {"type": "com.acme.order.created"}):
                response = await hub.client.post("/admin/dead-letters/purge", json=body, headers=ADMIN)
                assert 400 <= response.status_code < 500, response.text
                assert "subscription" in response.json()["error"]
            response = await hub.client.post("/admin/dead-letters/purge", content=b"", headers=ADMIN)
            assert 400 <= response.status_code < 500
            (other,) = (await admin_get(hub, "/dead-letters", subscription="other"))["dead_letters"]
            assert await admin_post(hub, "/dead-letters/purge", {"subscription": "other"}) == {"purged": 1}
            assert (await admin_get(hub, "/dead-letters"))["dead_letters"] == []
            response = await hub.client.get(f"/admin/dead-letters/{other['delivery_id']}", headers=ADMIN)
            assert response.status_code == 404
            assert (await admin_get(hub, "/broker"))["dead_letters"].get("other", 0) == 0
            response = await hub.client.post(
                "/admin/dead-letters/replay", json={"subscription": "nope"}, headers=ADMIN
            )
            assert response.status_code == 404
        finally:
            await delete_namespace(broker_url, hub.hub)


async def _delivered(hub: HubClient, delivery_id: str) -> bool:
    return (await verdicts(hub, delivery_id))[-1] == "delivered"
