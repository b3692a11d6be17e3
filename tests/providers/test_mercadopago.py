"""Mercado Pago verifier, checked against the SDK's WebhookSignatureValidator."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from mercadopago.webhook import InvalidWebhookSignatureError, WebhookSignatureValidator

from hookhub.errors import BadRequest, Unauthorized, Unprocessable
from hookhub.providers import InboundRequest

SECRET = "mp-secret-7b1f0e2d"
NOW = 1_704_908_010
REQUEST_ID = "bb56a2f1-6aae-46ac-982e-9dcd3581d08e"
DATA_ID = "123456"
BODY = json.dumps(
    {"id": 12345, "action": "payment.created", "type": "payment", "data": {"id": DATA_ID}, "live_mode": True}
).encode()


def manifest(data_id: str | None, request_id: str | None, ts: int | str) -> str:
    """The documented manifest, missing parts left out (as the SDK builds it)."""
    parts = ([f"id:{data_id}"] if data_id else []) + ([f"request-id:{request_id}"] if request_id else [])
    return ";".join([*parts, f"ts:{ts}"]) + ";"


def sign(
    data_id: str | None = DATA_ID, request_id: str | None = REQUEST_ID, ts: int = NOW, secret: str = SECRET
) -> str:
    digest = hmac.new(secret.encode(), manifest(data_id, request_id, ts).encode(), hashlib.sha256).hexdigest()
    return f"ts={ts},v1={digest}"


def request(
    signature: str | None = "auto",
    data_id: str | None = DATA_ID,
    request_id: str | None = REQUEST_ID,
    body: bytes = BODY,
    now: float = NOW,
    extra: dict[str, str] | None = None,
) -> InboundRequest:
    if signature == "auto":
        signature = sign(data_id, request_id)
    headers = dict(extra or {})
    if signature is not None:
        headers["x-signature"] = signature
    if request_id is not None:
        headers["x-request-id"] = request_id
    query = {"type": "payment"} | ({"data.id": data_id} if data_id is not None else {})
    return InboundRequest(
        body=body, headers=headers, query=query, content_type="application/json", received_at=now
    )


def sdk_accepts(req: InboundRequest, tolerance: int | None = None) -> bool:
    try:
        WebhookSignatureValidator.validate(
            req.header("x-signature"),
            req.header("x-request-id"),
            req.query.get("data.id"),
            SECRET,
            tolerance_seconds=tolerance,
            now=lambda: int(req.received_at * 1000),
        )
    except InvalidWebhookSignatureError:
        return False
    return True


def test_mapping_and_sdk_agrees(build, check_event):
    req = request()
    assert sdk_accepts(req)
    provider = build("mercadopago", "mp", secrets=[SECRET])
    provider.verify(req)
    check_event(
        provider.to_event(req), name="mp", id="12345", type="com.mercadopago.payment.created", body=BODY
    )


def test_correlation(build, check_event):
    event = build("mercadopago", secrets=[SECRET]).to_event(request(extra={"x-correlation-id": "c"}))
    check_event(
        event,
        name="mercadopago",
        id="12345",
        type="com.mercadopago.payment.created",
        body=BODY,
        correlationid="c",
    )


@pytest.mark.parametrize(("data_id", "request_id"), [(None, REQUEST_ID), (DATA_ID, None), (None, None)])
def test_missing_parts_left_out_like_the_sdk(build, data_id, request_id):
    req = request(data_id=data_id, request_id=request_id)
    assert sdk_accepts(req)
    build("mercadopago", secrets=[SECRET]).verify(req)


def test_alphanumeric_data_id_as_received_or_lower_cased(build):
    provider = build("mercadopago", secrets=[SECRET])
    as_received = request(sign("ABC123def"), data_id="ABC123def")
    assert sdk_accepts(as_received)
    provider.verify(as_received)
    provider.verify(request(sign("abc123def"), data_id="ABC123def"))  # the docs' rule
    with pytest.raises(Unauthorized):
        provider.verify(request(sign("abc123def"), data_id="ABC-123"))  # not alphanumeric: as is only


def test_rotation(build):
    build("mercadopago", secrets=["old", SECRET]).verify(request())


def test_header_spacing_and_order(build):
    digest = sign().split("v1=")[1]
    req = request(f" v1={digest} , ts={NOW} ")
    assert sdk_accepts(req)
    build("mercadopago", secrets=[SECRET]).verify(req)


@pytest.mark.parametrize(
    ("signature", "match"),
    [
        (None, "missing x-signature"),
        ("", "missing x-signature"),
        ("v1=abc", "ts"),
        ("ts=abc,v1=abc", "ts"),
        (f"ts={NOW}", "no v1"),
        (sign(secret="wrong"), "mismatch"),
        (sign(data_id="999"), "mismatch"),
        (sign(request_id="other"), "mismatch"),
    ],
)
def test_rejected(build, signature, match):
    req = request(signature)
    assert not sdk_accepts(req)
    with pytest.raises(Unauthorized, match=match) as exc:
        build("mercadopago", secrets=[SECRET]).verify(req)
    assert SECRET not in exc.value.message


def test_no_tolerance_by_default(build):
    req = request(now=NOW + 86_400)
    assert sdk_accepts(req)
    build("mercadopago", secrets=[SECRET]).verify(req)


@pytest.mark.parametrize(("offset", "ok"), [(300, True), (-300, True), (301, False), (-301, False)])
def test_configured_tolerance_both_directions(build, offset, ok):
    req = request(now=NOW + offset)
    assert sdk_accepts(req, tolerance=300) is ok
    provider = build("mercadopago", secrets=[SECRET], tolerance=300)
    if ok:
        provider.verify(req)
    else:
        with pytest.raises(Unauthorized, match="tolerance"):
            provider.verify(req)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"action": "payment.created"}', "id"),
        (b'{"id": 1}', "action"),
        (b'{"id": true, "action": "a"}', "id"),
    ],
)
def test_envelope_errors_are_422(build, body, field):
    with pytest.raises(Unprocessable) as exc:
        build("mercadopago", secrets=[SECRET]).to_event(request(body=body))
    assert exc.value.detail[0]["field"] == field


def test_non_json_is_400(build):
    with pytest.raises(BadRequest):
        build("mercadopago", secrets=[SECRET]).to_event(request(body=b"id=1&topic=payment"))
