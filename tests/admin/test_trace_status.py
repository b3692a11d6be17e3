"""Trace (`/admin/events`), broker state (`/admin/broker`), rejections and event types, against a
real store and the memory broker, including a broker that does not answer."""

from __future__ import annotations

import pytest

from hookhub.events import Event
from hookhub.fanout.sender import delivery_id
from hookhub.store.records import AttemptRecord, EventTypeSeen, Rejection
from tests.admin.conftest import FILE_SUB, Admin

T0 = 1_700_000_000.0


async def ingest(admin: Admin, event_id: str, correlation: str) -> Event:
    event = Event(
        id=event_id, source="/producers/billing", type="com.test.paid", data=b"{}", correlationid=correlation
    )
    await admin.hub.ingestor.ingest([event], origin="billing")
    return event


async def test_trace_by_id_and_correlation(admin: Admin) -> None:
    event = await ingest(admin, "evt-1", "order-7")
    await ingest(admin, "evt-2", "order-7")
    did = delivery_id(FILE_SUB, event)
    await admin.hub.store.attempts.record(
        AttemptRecord(
            did, FILE_SUB, event.source, event.id, event.type, "order-7", 1, T0, 200, 8.0, None, "delivered"
        )
    )
    response = await admin.client.get("/admin/events/evt-1")
    assert response.status_code == 200, response.text
    (trace,) = response.json()["events"]
    assert trace["ingest"]["origin"] == "billing" and trace["ingest"]["status"] == "accepted"
    assert trace["ingest"]["correlation_id"] == "order-7"
    assert trace["ingest"]["received_at"].endswith("Z")
    (attempt,) = trace["attempts"]
    assert (attempt["subscription"], attempt["status_code"], attempt["latency_ms"]) == (FILE_SUB, 200, 8.0)
    assert attempt["attempted_at"] == "2023-11-14T22:13:20Z"

    related = (await admin.client.get("/admin/events", params={"correlation_id": "order-7"})).json()["events"]
    assert [t["ingest"]["id"] for t in related] == ["evt-1", "evt-2"]
    assert (await admin.client.get("/admin/events", params={"correlation_id": "none"})).json() == {
        "events": []
    }


async def test_trace_refusals(admin: Admin) -> None:
    response = await admin.client.get("/admin/events/nope")
    assert response.status_code == 404
    assert "nope" in response.json()["error"]
    response = await admin.client.get("/admin/events")
    assert response.status_code == 422
    assert "correlation_id" in response.json()["error"]
    response = await admin.client.get("/admin/events/" + "x" * 256)
    assert response.status_code == 422


async def test_broker_lists_queues_roles_and_dead_letter_counts(admin: Admin) -> None:
    await ingest(admin, "evt-1", "c")  # routed to the file subscription and the archive
    response = await admin.client.get("/admin/broker")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["broker"] == "memory"
    queues = {q["name"]: q for q in body["queues"]}
    sub = queues[admin.hub.queue_of(FILE_SUB)]
    assert (sub["role"], sub["subscription"], sub["depth"]) == ("subscription", FILE_SUB, 1)
    assert queues[admin.hub.topology.archive_queue]["role"] == "archive"
    assert body["dead_letters"] == {}


async def test_broker_down(admin: Admin) -> None:
    admin.hub.broker.server.down = True  # type: ignore[attr-defined]
    response = await admin.client.get("/admin/broker")
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert "broker" in response.json()["error"]
    listing = await admin.client.get("/admin/subscriptions")  # still answers, without depths
    assert listing.status_code == 200
    assert listing.json()["subscriptions"][0]["depth"] is None


async def test_rejections_newest_first_filtered(admin: Admin) -> None:
    await admin.hub.store.observations.record_rejections(
        [
            Rejection("stripe", T0, 401, "signature mismatch"),
            Rejection("github", T0 + 1, 400, "not JSON"),
            Rejection("stripe", T0 + 2, 401, "timestamp outside tolerance"),
        ]
    )
    body = (await admin.client.get("/admin/rejections")).json()["rejections"]
    assert [r["reason"] for r in body] == ["timestamp outside tolerance", "not JSON", "signature mismatch"]
    assert body[0] == {
        "provider": "stripe",
        "at": "2023-11-14T22:13:22Z",
        "status": 401,
        "reason": "timestamp outside tolerance",
    }
    stripe = (await admin.client.get("/admin/rejections", params={"provider": "stripe", "limit": 1})).json()
    assert [r["reason"] for r in stripe["rejections"]] == ["timestamp outside tolerance"]


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": "x"}, {"provider": ""}])
async def test_rejections_refusals(admin: Admin, params: dict[str, object]) -> None:
    response = await admin.client.get("/admin/rejections", params=params)
    assert response.status_code == 422
    assert next(iter(params)) in response.json()["error"]


async def test_event_types(admin: Admin) -> None:
    await admin.hub.store.observations.count_types(
        [
            EventTypeSeen("stripe", "com.stripe.invoice.paid", 3, T0),
            EventTypeSeen("billing", "com.test.x", 1, T0),
        ]
    )
    await admin.hub.store.observations.count_types(
        [EventTypeSeen("stripe", "com.stripe.invoice.paid", 2, T0 + 5)]
    )
    body = (await admin.client.get("/admin/event-types", params={"provider": "stripe"})).json()
    assert body == {
        "event_types": [
            {
                "provider": "stripe",
                "type": "com.stripe.invoice.paid",
                "count": 5,
                "last_seen": "2023-11-14T22:13:25Z",
            }
        ]
    }
    assert len((await admin.client.get("/admin/event-types")).json()["event_types"]) == 2
