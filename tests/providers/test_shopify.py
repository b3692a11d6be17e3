"""Shopify verifier: base64 HMAC-SHA256 of the body, ids and topic from headers."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from hookhub.errors import Unauthorized, Unprocessable
from hookhub.providers import InboundRequest

SECRET = "shpss_0123456789abcdef"
BODY = b'{"id": 820982911946154508, "email": "jon@example.com"}'
EVENT_ID = "98880550-7158-44d4-b7cd-2c97c8a091b5"
WEBHOOK_ID = "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"


def sign(body: bytes, secret: str = SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def headers(overrides: dict[str, str | None] | None = None) -> dict[str, str]:
    base: dict[str, str | None] = {
        "x-shopify-hmac-sha256": sign(BODY),
        "x-shopify-topic": "orders/create",
        "x-shopify-event-id": EVENT_ID,
        "x-shopify-webhook-id": WEBHOOK_ID,
        "x-shopify-shop-domain": "example.myshopify.com",
    }
    base.update(overrides or {})
    return {k: v for k, v in base.items() if v is not None}


def request(
    body: bytes = BODY, content_type: str = "application/json", overrides: dict[str, str | None] | None = None
) -> InboundRequest:
    return InboundRequest(body=body, headers=headers(overrides), content_type=content_type)


def test_mapping(build, check_event):
    provider = build("shopify", "shop", secrets=[SECRET])
    req = request()
    provider.verify(req)
    check_event(provider.to_event(req), name="shop", id=EVENT_ID, type="com.shopify.orders.create", body=BODY)


def test_webhook_id_fallback_nested_topic_and_correlation(build, check_event):
    req = request(
        overrides={
            "x-shopify-event-id": None,
            "x-shopify-topic": "app/subscriptions/update",
            "x-correlation-id": "c",
        }
    )
    event = build("shopify", secrets=[SECRET]).to_event(req)
    check_event(
        event,
        name="shopify",
        id=WEBHOOK_ID,
        type="com.shopify.app.subscriptions.update",
        body=BODY,
        correlationid="c",
    )


def test_rotation(build):
    build("shopify", secrets=["old", SECRET]).verify(request())


@pytest.mark.parametrize(
    "signature",
    [None, "", sign(BODY, "wrong"), sign(b"tampered"), "not base64!"],
)
def test_rejected(build, signature):
    with pytest.raises(Unauthorized) as exc:
        build("shopify", secrets=[SECRET]).verify(request(overrides={"x-shopify-hmac-sha256": signature}))
    assert SECRET not in exc.value.message


def test_tampered_body(build):
    with pytest.raises(Unauthorized, match="mismatch"):
        build("shopify", secrets=[SECRET]).verify(request(BODY + b" "))


def test_missing_topic_is_422(build):
    with pytest.raises(Unprocessable, match="X-Shopify-Topic"):
        build("shopify", secrets=[SECRET]).to_event(request(overrides={"x-shopify-topic": None}))


def test_missing_both_ids_is_422(build):
    req = request(overrides={"x-shopify-event-id": None, "x-shopify-webhook-id": None})
    with pytest.raises(Unprocessable, match="X-Shopify-Event-Id") as exc:
        build("shopify", secrets=[SECRET]).to_event(req)
    assert "X-Shopify-Webhook-Id" in exc.value.detail[0]["problem"]


def test_body_is_not_parsed(build, check_event):
    """The mapping needs no body field, so an XML-format subscription passes through untouched."""
    body = b"<?xml version='1.0'?><order><id>1</id></order>"
    provider = build("shopify", secrets=[SECRET])
    req = request(body, "application/xml", overrides={"x-shopify-hmac-sha256": sign(body)})
    provider.verify(req)
    event = provider.to_event(req)
    check_event(
        event,
        name="shopify",
        id=EVENT_ID,
        type="com.shopify.orders.create",
        body=body,
        content_type="application/xml",
    )
