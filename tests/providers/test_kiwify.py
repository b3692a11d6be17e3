"""Kiwify: query `signature` = hex HMAC-SHA1 of the body keyed by the token."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from hookhub.errors import BadRequest, Unauthorized, Unprocessable
from hookhub.providers import InboundRequest

TOKEN = "kiwify-token-abc123"
BODY = json.dumps(
    {
        "order_id": "a1b2c3d4-0000-4000-8000-000000000001",
        "order_status": "paid",
        "webhook_event_type": "order_approved",
    }
).encode()


def sign(body: bytes, token: str = TOKEN) -> str:
    return hmac.new(token.encode(), body, hashlib.sha1).hexdigest()


def request(
    body: bytes = BODY, signature: str | None = "auto", extra: dict[str, str] | None = None
) -> InboundRequest:
    query: dict[str, str] = {}
    if signature == "auto":
        signature = sign(body)
    if signature is not None:
        query["signature"] = signature
    return InboundRequest(body=body, headers=extra or {}, query=query, content_type="application/json")


def test_mapping(build, check_event):
    provider = build("kiwify", "kw", token=TOKEN)
    req = request()
    assert len(req.query["signature"]) == 40
    provider.verify(req)
    check_event(
        provider.to_event(req),
        name="kw",
        id="a1b2c3d4-0000-4000-8000-000000000001:order_approved",
        type="com.kiwify.order_approved",
        body=BODY,
    )


def test_correlation(build, check_event):
    body = b'{"order_id": 77, "webhook_event_type": "order_refunded"}'
    event = build("kiwify", token=TOKEN).to_event(request(body, extra={"x-correlation-id": "c"}))
    check_event(
        event,
        name="kiwify",
        id="77:order_refunded",
        type="com.kiwify.order_refunded",
        body=body,
        correlationid="c",
    )


def test_rotation(build):
    build("kiwify", token="old", secrets=[TOKEN]).verify(request())


def test_uppercase_hex_accepted(build):
    build("kiwify", token=TOKEN).verify(request(signature=sign(BODY).upper()))


@pytest.mark.parametrize(
    ("signature", "match"),
    [
        (None, "missing"),
        ("", "missing"),
        (sign(BODY, "wrong"), "mismatch"),
        (sign(b"tampered"), "mismatch"),
        (hmac.new(TOKEN.encode(), BODY, hashlib.sha256).hexdigest(), "mismatch"),
    ],
)
def test_rejected(build, signature, match):
    with pytest.raises(Unauthorized, match=match) as exc:
        build("kiwify", token=TOKEN).verify(request(signature=signature))
    assert TOKEN not in exc.value.message


def test_tampered_body(build):
    req = request()
    req.body = BODY.replace(b"paid", b"refunded")
    with pytest.raises(Unauthorized):
        build("kiwify", token=TOKEN).verify(req)


@pytest.mark.parametrize(
    ("body", "field"),
    [(b'{"webhook_event_type": "x"}', "order_id"), (b'{"order_id": "1"}', "webhook_event_type")],
)
def test_missing_field_is_422(build, body, field):
    with pytest.raises(Unprocessable, match=field):
        build("kiwify", token=TOKEN).to_event(request(body))


def test_non_json_is_400(build):
    with pytest.raises(BadRequest):
        build("kiwify", token=TOKEN).to_event(request(b""))
