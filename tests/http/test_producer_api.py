"""POST /events: binary, structured and batch CloudEvents from internal producers."""

from __future__ import annotations

import json
import uuid

from tests.http.conftest import PRODUCER_TOKEN, HubClient

AUTH = {"Authorization": f"Bearer {PRODUCER_TOKEN}"}


def structured(event_id: str | None = None, **extra: object) -> dict[str, object]:
    return {
        "specversion": "1.0",
        "id": event_id or uuid.uuid4().hex,
        "source": "/billing",
        "type": "com.acme.invoice.created",
        "data": {"amount": 10},
        **extra,
    }


async def test_binary_mode_keeps_body_and_content_type(hub: HubClient) -> None:
    headers = {
        **AUTH,
        "ce-specversion": "1.0",
        "ce-id": "b-1",
        "ce-source": "/billing",
        "ce-type": "com.acme.invoice.created",
        "ce-tenant": "t1",
        "Content-Type": "text/plain",
    }
    response = await hub.client.post("/events", content=b"raw bytes \x00\x01", headers=headers)
    assert response.status_code == 202 and response.json() == {"id": "b-1", "status": "accepted"}
    assert await hub.enqueued() == 1


async def test_structured_mode_and_duplicate(hub: HubClient) -> None:
    headers = {**AUTH, "Content-Type": "application/cloudevents+json"}
    body = json.dumps(structured("s-1", correlationid="order-9"))
    assert (await hub.client.post("/events", content=body, headers=headers)).status_code == 202
    again = await hub.client.post("/events", content=body, headers=headers)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert await hub.enqueued() == 1
    records = await hub.hub.store.claims.by_correlation("order-9")
    assert [r.event_id for r in records] == ["s-1"]


async def test_batch_is_accepted_whole(hub: HubClient) -> None:
    events = [structured() for _ in range(100)]
    headers = {**AUTH, "Content-Type": "application/cloudevents-batch+json"}
    response = await hub.client.post("/events", content=json.dumps(events), headers=headers)
    assert response.status_code == 202
    assert response.json()["ids"] == [e["id"] for e in events]
    assert await hub.enqueued() == 100


async def test_batch_with_one_invalid_event_enqueues_nothing(hub: HubClient) -> None:
    events = [structured() for _ in range(5)]
    del events[3]["source"]
    headers = {**AUTH, "Content-Type": "application/cloudevents-batch+json"}
    response = await hub.client.post("/events", content=json.dumps(events), headers=headers)
    assert response.status_code == 400
    assert "[3].source" in response.json()["error"]
    assert await hub.enqueued() == 0


async def test_missing_binary_attributes_are_named(hub: HubClient) -> None:
    headers = {**AUTH, "ce-specversion": "1.0", "ce-source": "/billing"}
    response = await hub.client.post("/events", content=b"{}", headers=headers)
    assert response.status_code == 400
    assert response.json()["detail"]["missing"] == ["id", "type"]
    assert await hub.enqueued() == 0


async def test_bad_or_missing_token_is_401(hub: HubClient) -> None:
    body = json.dumps(structured())
    for headers in ({"Authorization": "Bearer nope"}, {}):
        headers["Content-Type"] = "application/cloudevents+json"
        response = await hub.client.post("/events", content=body, headers=headers)
        assert response.status_code == 401
    assert await hub.enqueued() == 0


async def test_producers_cannot_impersonate_providers(hub: HubClient) -> None:
    headers = {**AUTH, "Content-Type": "application/cloudevents+json"}
    body = json.dumps(structured(source="/providers/stripe"))
    response = await hub.client.post("/events", content=body, headers=headers)
    assert response.status_code == 400 and "reserved" in response.json()["error"]
    assert await hub.enqueued() == 0


async def test_attributes_too_long_for_the_broker_are_422(hub: HubClient) -> None:
    headers = {**AUTH, "Content-Type": "application/cloudevents+json"}
    body = json.dumps(structured(type="com.acme." + "x" * 300))
    response = await hub.client.post("/events", content=body, headers=headers)
    assert response.status_code == 422 and "type" in response.json()["error"]
    assert await hub.enqueued() == 0


async def test_a_bad_event_in_a_batch_is_422_naming_it_and_enqueues_nothing(hub: HubClient) -> None:
    events = [structured() for _ in range(4)]
    events[2]["tenant"] = "a\x00b"  # PostgreSQL refuses NUL; CR/LF would split a delivery header
    headers = {**AUTH, "Content-Type": "application/cloudevents-batch+json"}
    response = await hub.client.post("/events", content=json.dumps(events), headers=headers)
    assert response.status_code == 422
    assert response.json()["detail"]["attribute"] == "[2].tenant"
    assert await hub.enqueued() == 0


async def test_an_extension_cannot_shadow_a_core_attribute(hub: HubClient) -> None:
    headers = {**AUTH, "ce-specversion": "1.0", "ce-id": "b-2", "ce-source": "/billing", "ce-type": "t"}
    headers["ce-datacontenttype"] = "text/evil"  # would override Content-Type on delivery
    response = await hub.client.post("/events", content=b"{}", headers=headers)
    assert response.status_code == 422 and response.json()["detail"]["attribute"] == "datacontenttype"
    assert await hub.enqueued() == 0


async def test_hostile_bodies_are_400(hub: HubClient) -> None:
    headers = {**AUTH, "Content-Type": "application/cloudevents+json"}
    for body in (b"[" * 5_000, b'{"specversion": "1.0", "id": "\xff"}', structured_json_utf16()):
        response = await hub.client.post("/events", content=body, headers=headers)
        assert response.status_code == 400, body[:40]
    assert await hub.enqueued() == 0


def structured_json_utf16() -> bytes:
    return json.dumps(structured()).encode("utf-16")
