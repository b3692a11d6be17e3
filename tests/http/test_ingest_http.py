"""Provider webhooks over HTTP on both brokers: every SPEC status, and proof of what was enqueued."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
import uuid

import pytest

from hookhub.logs import JsonFormatter, TextFormatter
from tests.http.conftest import SECRETS, HubClient, base_config, running_hub


def stripe_request(
    event_id: str | None = None,
    *,
    secret: str = SECRETS["stripe"],
    ts: int | None = None,
    body: bytes | None = None,
) -> tuple[bytes, dict[str, str]]:
    body = (
        body
        or json.dumps(
            {
                "id": event_id or f"evt_{uuid.uuid4().hex}",
                "type": "invoice.paid",
                "object": "event",
                "data": {"object": {"amount": 100}},
            }
        ).encode()
    )
    ts = int(time.time()) if ts is None else ts
    sig = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return body, {"Stripe-Signature": f"t={ts},v1={sig}", "Content-Type": "application/json"}


def github_request(delivery: str | None = None) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"action": "opened", "number": 1}).encode()
    sig = hmac.new(SECRETS["github"].encode(), body, hashlib.sha256).hexdigest()
    return body, {
        "X-Hub-Signature-256": f"sha256={sig}",
        "X-GitHub-Event": "pull_request",
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "Content-Type": "application/json",
    }


async def test_accepted_event_is_enqueued_with_its_cloudevent_attributes(hub: HubClient) -> None:
    body, headers = stripe_request("evt_1")
    headers["X-Correlation-ID"] = "corr-1"
    response = await hub.client.post("/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 202, response.text
    assert response.json() == {"id": "evt_1", "status": "accepted"}
    assert await hub.enqueued() == 1
    record = await hub.hub.store.claims.record(("/providers/stripe", "evt_1"))
    assert (
        record is not None and record.type == "com.stripe.invoice.paid" and record.correlation_id == "corr-1"
    )


async def test_rotated_secret_is_accepted(hub: HubClient) -> None:
    body, headers = stripe_request(secret="whsec_old")
    assert (await hub.client.post("/webhooks/stripe", content=body, headers=headers)).status_code == 202


async def test_duplicate_answers_200_and_is_not_published_again(hub: HubClient) -> None:
    body, headers = github_request("delivery-1")
    first = await hub.client.post("/webhooks/github", content=body, headers=headers)
    second = await hub.client.post("/webhooks/github", content=body, headers=headers)
    assert first.status_code == 202
    assert second.status_code == 200 and second.json() == {"id": "delivery-1", "status": "duplicate"}
    assert await hub.enqueued() == 1


async def test_simultaneous_copies_publish_once(hub: HubClient) -> None:
    body, headers = github_request("delivery-race")
    responses = await asyncio.gather(
        *[hub.client.post("/webhooks/github", content=body, headers=headers) for _ in range(25)]
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 24 + [202]
    assert await hub.enqueued() == 1


async def test_many_concurrent_distinct_events_all_enqueued(hub: HubClient) -> None:
    requests = [github_request() for _ in range(200)]
    responses = await asyncio.gather(
        *[hub.client.post("/webhooks/github", content=b, headers=h) for b, h in requests]
    )
    assert {r.status_code for r in responses} == {202}
    assert await hub.enqueued() == 200


@pytest.mark.parametrize(
    ("case", "status", "message"),
    [
        ("unknown provider", 404, "unknown provider"),
        ("wrong signature", 401, "signature"),
        ("missing signature", 401, "Stripe-Signature"),
        ("stale timestamp", 401, "too old"),
        ("not json", 400, "JSON"),
        ("envelope missing type", 422, "type"),
        ("too large", 413, None),
    ],
)
async def test_rejections_enqueue_nothing(
    hub: HubClient, case: str, status: int, message: str | None
) -> None:
    path = "/webhooks/stripe"
    body, headers = stripe_request()
    if case == "unknown provider":
        path = "/webhooks/nosuch"
    elif case == "wrong signature":
        body, headers = stripe_request(secret="whsec_wrong")
    elif case == "missing signature":
        del headers["Stripe-Signature"]
    elif case == "stale timestamp":
        body, headers = stripe_request(ts=int(time.time()) - 301)
    elif case == "not json":
        body, headers = stripe_request(body=b"not json at all")
    elif case == "envelope missing type":
        body, headers = stripe_request(body=json.dumps({"id": "evt_x"}).encode())
    elif case == "too large":
        body, headers = stripe_request(
            body=json.dumps({"id": "e", "type": "t", "pad": "x" * 70_000}).encode()
        )
    response = await hub.client.post(path, content=body, headers=headers)
    assert response.status_code == status, response.text
    if message:
        assert message in response.json()["error"]
    assert SECRETS["stripe"] not in response.text
    assert await hub.enqueued() == 0
    assert await hub.hub.store.claims.by_correlation("evt_x") == []


async def test_oversized_chunked_body_is_refused_while_streaming(hub: HubClient) -> None:
    async def chunks():  # no Content-Length: the limit must hold while reading
        for _ in range(70):
            yield b"x" * 1000

    response = await hub.client.post(
        "/webhooks/stripe", content=chunks(), headers={"Stripe-Signature": "t=1,v1=0"}
    )
    assert response.status_code == 413
    assert await hub.enqueued() == 0


async def test_slack_url_verification_echoes_challenge_and_enqueues_nothing(hub: HubClient) -> None:
    body = json.dumps({"type": "url_verification", "challenge": "abc123", "token": "x"}).encode()
    ts = str(int(time.time()))
    sig = hmac.new(SECRETS["slack"].encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    headers = {
        "X-Slack-Signature": f"v0={sig}",
        "X-Slack-Request-Timestamp": ts,
        "Content-Type": "application/json",
    }
    response = await hub.client.post("/webhooks/slack", content=body, headers=headers)
    assert response.status_code == 200 and response.json() == {"challenge": "abc123"}
    assert await hub.enqueued() == 0


async def test_shopify_and_standard_webhooks_map_ids_and_types(hub: HubClient) -> None:
    body = b'{"id": 42, "email": "a@b.c"}'
    digest = base64.b64encode(hmac.new(SECRETS["shopify"].encode(), body, hashlib.sha256).digest()).decode()
    response = await hub.client.post(
        "/webhooks/shop",
        content=body,
        headers={
            "X-Shopify-Hmac-Sha256": digest,
            "X-Shopify-Topic": "orders/create",
            "X-Shopify-Event-Id": "shop-evt-1",
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 202 and response.json()["id"] == "shop-evt-1"
    record = await hub.hub.store.claims.record(("/providers/shop", "shop-evt-1"))
    assert record is not None and record.type == "com.shopify.orders.create"

    msg_id, ts, body = "msg_1", str(int(time.time())), b'{"type": "invoice.created", "x": 1}'
    key = base64.b64decode(SECRETS["standard"].removeprefix("whsec_"))
    sig = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
    response = await hub.client.post(
        "/webhooks/svix",
        content=body,
        headers={"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": f"v1,{sig}"},
    )
    assert response.status_code == 202
    record = await hub.hub.store.claims.record(("/providers/svix", "msg_1"))
    assert record is not None and record.type == "com.svix.invoice.created"


async def test_health_ready_and_metrics(hub: HubClient) -> None:
    assert (await hub.client.get("/healthz")).status_code == 200
    ready = await hub.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"broker": True, "store": True}
    body, headers = github_request()
    await hub.client.post("/webhooks/github", content=body, headers=headers)
    await hub.client.post("/webhooks/github", content=b"{}", headers={"X-GitHub-Event": "push"})
    metrics = (await hub.client.get("/metrics")).text
    assert 'hookhub_ingested_events_total{provider="github",result="accepted"} 1.0' in metrics
    assert 'hookhub_ingested_events_total{provider="github",result="unauthorized"} 1.0' in metrics
    assert "hookhub_queue_depth" in metrics
    assert SECRETS["github"] not in metrics


def http_log(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "hookhub.http"]


async def test_a_rejection_is_one_log_line_without_secrets(
    hub: HubClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    body, headers = stripe_request()
    assert (await hub.client.post("/webhooks/stripe", content=body, headers=headers)).status_code == 202
    assert http_log(caplog) == []  # success is silent
    body, headers = stripe_request(secret="whsec_wrong")
    headers["X-Correlation-ID"] = "corr-9"
    response = await hub.client.post("/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 401
    (record,) = http_log(caplog)
    assert record.levelno == logging.WARNING
    fields = {k: getattr(record, k, None) for k in ("status", "provider", "reason", "correlation_id")}
    assert fields == {
        "status": 401,
        "provider": "stripe",
        "reason": "signature mismatch",
        "correlation_id": "corr-9",
    }
    signature = headers["Stripe-Signature"].split("v1=")[1]
    for line in (JsonFormatter().format(record), TextFormatter().format(record)):
        assert SECRETS["stripe"] not in line and signature not in line


async def test_producer_rejection_names_no_producer_and_shows_no_token(
    hub: HubClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    response = await hub.client.post(
        "/events", content=b"{}", headers={"Authorization": "Bearer guessed-token"}
    )
    assert response.status_code == 401
    (record,) = http_log(caplog)
    assert record.status == 401 and not hasattr(record, "producer")  # type: ignore[attr-defined]
    assert "guessed-token" not in JsonFormatter().format(record)


async def test_metric_labels_are_bounded_by_the_configuration(hub: HubClient) -> None:
    """Any client can POST to /webhooks/<anything>: the name must not become a time series."""
    for i in range(3):
        assert (await hub.client.post(f"/webhooks/nosuch-{i}", content=b"{}")).status_code == 404
    await hub.client.post("/events", content=b"{}", headers={"Authorization": "Bearer guessed-token"})
    metrics = (await hub.client.get("/metrics")).text
    assert 'hookhub_ingested_events_total{provider="unknown",result="unknown_provider"} 3.0' in metrics
    assert 'hookhub_ingested_events_total{provider="unknown",result="unauthorized"} 1.0' in metrics
    assert "nosuch" not in metrics


@pytest.mark.rabbitmq
async def test_broker_down_answers_503_with_retry_after_and_keeps_no_claim(
    tmp_path, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    config = base_config("amqp://guest:guest@127.0.0.1:1/%2F", f"sqlite:///{tmp_path}/store.db", namespace)
    async with running_hub(config) as hub:
        body, headers = github_request("delivery-down")
        response = await hub.client.post("/webhooks/github", content=body, headers=headers)
        assert response.status_code == 503
        (record,) = http_log(caplog)
        assert (record.status, record.event_id, record.levelno) == (503, "delivery-down", logging.WARNING)  # type: ignore[attr-defined]
        assert response.headers["Retry-After"].isdigit()
        assert (await hub.client.get("/readyz")).status_code == 503
        # the failed attempt left no claim behind: a retry is not mistaken for a duplicate
        assert await hub.hub.store.claims.record(("/providers/github", "delivery-down")) is None
