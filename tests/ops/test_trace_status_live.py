"""What an operator can see of a running hub, on the SQLite broker and on RabbitMQ: an event's
trace (ingest record and every attempt), refused webhooks, event types per provider, and the
broker's queues with their dead-letter counts."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import pytest

from hookhub import observations
from tests.http.conftest import SECRETS, HubClient, delete_namespace, running_hub
from tests.ops._live import (
    ADMIN,
    FAST_RETRY,
    admin_get,
    admin_post,
    hub_config,
    produce,
    push,
    stripe_request,
    until,
)
from tests.support.subscriber import Subscriber


async def trace(hub: HubClient, event_id: str, attempts: int) -> dict[str, Any]:
    """The event's one trace, once it shows `attempts` attempts."""

    async def found() -> dict[str, Any] | None:
        (one,) = (await admin_get(hub, f"/events/{event_id}"))["events"]
        return one if len(one["attempts"]) >= attempts else None

    return await until(found, f"{attempts} attempts of {event_id}")


async def test_an_event_traced_by_id_and_by_correlation_id(
    broker_url: str, tmp_path: Any, namespace: str, subscriber: Subscriber
) -> None:
    subscriber.fail_times(1, 503, path="/b")
    subscriber.stall(0.05, path="/a")
    config = hub_config(
        broker_url,
        tmp_path,
        namespace,
        a=push(subscriber.url("/a"), "com.acme.#"),
        b=push(subscriber.url("/b"), "com.acme.#", **{**FAST_RETRY, "max_attempts": 3}),
    )
    async with running_hub(config) as hub:
        try:
            correlation = f"order-{time.time_ns()}"
            received = time.time()
            first, second = await produce(hub, 2, correlation_id=correlation)
            traced = await trace(hub, first, 3)
            ingest = traced["ingest"]
            assert (ingest["id"], ingest["source"], ingest["type"]) == (
                first,
                "/billing",
                "com.acme.invoice.paid",
            )
            assert (ingest["origin"], ingest["correlation_id"], ingest["status"]) == (
                "billing",
                correlation,
                "accepted",
            )
            by_sub: dict[str, list[tuple[int, str, int | None]]] = {}
            for a in sorted(traced["attempts"], key=lambda a: (a["subscription"], a["attempt"])):
                by_sub.setdefault(a["subscription"], []).append(
                    (a["attempt"], a["verdict"], a["status_code"])
                )
                assert a["latency_ms"] >= 0
            assert by_sub == {"a": [(1, "delivered", 200)], "b": [(1, "retry", 503), (2, "delivered", 200)]}
            (delivered_a,) = [a for a in traced["attempts"] if a["subscription"] == "a"]
            assert delivered_a["latency_ms"] >= 40  # the subscriber took 50 ms
            (failed,) = [a for a in traced["attempts"] if a["verdict"] == "retry"]
            assert "503" in failed["error"] and failed["next_attempt_at"] is not None

            await trace(hub, second, 2)  # `b` failed only once: the second event went through at once
            together = (await admin_get(hub, "/events", correlation_id=correlation))["events"]
            assert [t["ingest"]["id"] for t in together] in ([first, second], [second, first])
            assert sorted(len(t["attempts"]) for t in together) == [2, 3]
            assert all(_at(t["ingest"]["received_at"]) >= received - 1 for t in together)
            assert (await admin_get(hub, "/events", correlation_id="nothing-like-it"))["events"] == []
            response = await hub.client.get("/admin/events/no-such-event", headers=ADMIN)
            assert response.status_code == 404 and "no-such-event" in response.json()["error"]

            # a provider's webhook is traced with the provider as its origin
            event_id, body, headers = stripe_request()
            assert (
                await hub.client.post("/webhooks/stripe", content=body, headers=headers)
            ).status_code == 202
            (stripe,) = (await admin_get(hub, f"/events/{event_id}"))["events"]
            assert stripe["ingest"]["origin"] == "stripe"
            assert stripe["ingest"]["type"] == "com.stripe.invoice.paid" and stripe["attempts"] == []
        finally:
            await delete_namespace(broker_url, hub.hub)


async def test_rejections_are_listed_with_their_reason_without_secrets_and_bounded(
    broker_url: str, tmp_path: Any, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(observations, "KEEP_PER_PROVIDER", 3)
    async with running_hub(hub_config(broker_url, tmp_path, namespace)) as hub:
        try:
            signatures = []
            for _ in range(5):
                _, body, headers = stripe_request(secret="whsec_wrong")
                signatures.append(headers["Stripe-Signature"])
                response = await hub.client.post("/webhooks/stripe", content=body, headers=headers)
                assert response.status_code == 401, response.text
            _, body, _ = stripe_request()
            response = await hub.client.post("/webhooks/stripe", content=body)  # no signature at all
            assert response.status_code == 401
            response = await hub.client.post(
                "/webhooks/github", content=b"{}", headers={"X-Hub-Signature-256": "sha256=00"}
            )
            assert response.status_code == 401

            async def listed() -> list[dict[str, Any]] | None:
                found = (await admin_get(hub, "/rejections"))["rejections"]
                return found if {r["provider"] for r in found} == {"stripe", "github"} else None

            everything = await until(listed, "rejections of stripe and github")
            stripe = (await admin_get(hub, "/rejections", provider="stripe"))["rejections"]
            assert len(stripe) == 3  # only the newest few per provider are kept
            assert all(r["status"] == 401 and r["reason"] for r in stripe)
            assert [r["at"] for r in stripe] == sorted((r["at"] for r in stripe), reverse=True)
            assert any("signature" in r["reason"].lower() for r in stripe)
            (github,) = (await admin_get(hub, "/rejections", provider="github"))["rejections"]
            assert github["status"] == 401
            assert len(everything) == 4
            newest = await admin_get(hub, "/rejections", provider="stripe", limit=1)
            assert newest["rejections"] == stripe[:1]

            text = (await hub.client.get("/admin/rejections", headers=ADMIN)).text
            for secret in (*SECRETS.values(), "whsec_old", "whsec_wrong", *signatures):
                assert secret not in text
            for sig in signatures:
                assert sig.split("v1=")[1] not in text
        finally:
            await delete_namespace(broker_url, hub.hub)


async def test_event_types_are_counted_per_provider_with_the_last_seen_time(
    broker_url: str, tmp_path: Any, namespace: str
) -> None:
    async with running_hub(hub_config(broker_url, tmp_path, namespace)) as hub:
        try:
            before = time.time()
            for type_ in ("invoice.paid", "invoice.paid", "customer.created"):
                _, body, headers = stripe_request(type_)
                response = await hub.client.post("/webhooks/stripe", content=body, headers=headers)
                assert response.status_code == 202, response.text
            _, body, headers = stripe_request(event_id="evt_again")
            await hub.client.post("/webhooks/stripe", content=body, headers=headers)
            assert (
                await hub.client.post("/webhooks/stripe", content=body, headers=headers)
            ).status_code == 200
            await produce(hub, 4, type_="com.acme.order.created")

            async def counted() -> dict[tuple[str, str], dict[str, Any]] | None:
                found = (await admin_get(hub, "/event-types"))["event_types"]
                types = {(t["provider"], t["type"]): t for t in found}
                return types if len(types) == 3 else None

            types = await until(counted, "three event types")
            assert {key: t["count"] for key, t in types.items()} == {
                ("stripe", "com.stripe.invoice.paid"): 3,  # the duplicate is not counted twice
                ("stripe", "com.stripe.customer.created"): 1,
                ("billing", "com.acme.order.created"): 4,
            }
            assert all(_at(t["last_seen"]) >= before - 1 for t in types.values())
            only = (await admin_get(hub, "/event-types", provider="billing"))["event_types"]
            assert [(t["type"], t["count"]) for t in only] == [("com.acme.order.created", 4)]

            # counts add up across flushes, and last_seen moves on
            await asyncio.sleep(0.01)
            await produce(hub, 1, type_="com.acme.order.created")

            async def recounted() -> dict[str, Any] | None:
                (t,) = (await admin_get(hub, "/event-types", provider="billing"))["event_types"]
                return t if t["count"] == 5 else None

            later = await until(recounted, "five orders")
            assert _at(later["last_seen"]) > _at(only[0]["last_seen"])
        finally:
            await delete_namespace(broker_url, hub.hub)


async def test_the_broker_shows_queues_consumers_in_flight_and_dead_letters(
    broker_url: str, tmp_path: Any, namespace: str, subscriber: Subscriber
) -> None:
    subscriber.stall(3.0, path="/busy")
    subscriber.status(400, path="/dead")
    config = hub_config(
        broker_url,
        tmp_path,
        namespace,
        busy=push(subscriber.url("/busy"), "com.acme.#", timeout="5s", max_in_flight=2),
        dead=push(subscriber.url("/dead"), "com.acme.#", **FAST_RETRY),
    )
    async with running_hub(config) as hub:
        try:
            await admin_post(
                hub,
                "/subscriptions",
                {"name": "held", "url": subscriber.url("/held"), "types": ["com.acme.#"]},
                status=201,
            )
            await admin_post(hub, "/subscriptions/held/pause", {"reason": "test"})
            await produce(hub, 3)
            await subscriber.wait_for_async(2, 10, path="/busy")  # two in flight, one waiting
            await subscriber.wait_for_async(3, 10, path="/dead")

            async def described() -> dict[str, Any] | None:
                answer = await admin_get(hub, "/broker")
                return answer if answer["dead_letters"].get("dead") == 3 else None

            answer = await until(described, "three dead letters of `dead`")
            assert answer["broker"] == ("rabbitmq" if broker_url.startswith("amqp") else "sqlite")
            queues = {q["name"]: q for q in answer["queues"]}
            roles = {q["subscription"]: q for q in answer["queues"] if q["role"] == "subscription"}
            assert set(roles) == {"busy", "dead", "held"}
            assert {q["role"] for q in answer["queues"]} >= {"subscription", "archive"}
            busy = roles["busy"]
            assert busy["name"] == hub.hub.queue_of("busy") and busy["name"] in queues
            # leased by its consumer (prefetched beyond the two POSTs under way) or ready
            assert busy["in_flight"] >= 2 and busy["in_flight"] + busy["depth"] == 3, busy
            assert len(subscriber.requests("/busy")) == 2  # max_in_flight holds
            if broker_url.startswith("amqp"):
                assert busy["consumers"] == 1
            else:
                assert busy["consumers"] is None  # SQLite cannot see other processes' consumers
            assert roles["dead"]["depth"] == 0
            assert roles["held"]["depth"] == 3 and roles["held"]["in_flight"] in (0, None)
            assert subscriber.requests("/held") == []
            assert answer["dead_letters"] == {"dead": 3}
        finally:
            await delete_namespace(broker_url, hub.hub)


def _at(text: str) -> float:
    """Unix seconds of an RFC 3339 time the API answered."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
