"""Stripe verifier against signatures made by the stripe SDK itself."""

from __future__ import annotations

import json
import time

import pytest
import stripe
from stripe._webhook import WebhookSignature

from hookhub.errors import BadRequest, InvalidEvent, Unauthorized, Unprocessable
from hookhub.providers import InboundRequest

SECRET = "whsec_test_5WbX5kEWLlfzsGNjH64I8lOOqUB6e8FH"
OTHER = "whsec_old_0000000000000000000000000000000"
BODY = json.dumps({"id": "evt_1", "object": "event", "type": "invoice.paid", "data": {"object": {}}}).encode()


def request(
    body: bytes, header: str | None, now: float, extra: dict[str, str] | None = None
) -> InboundRequest:
    all_headers = dict(extra or {})
    if header is not None:
        all_headers["stripe-signature"] = header
    return InboundRequest(body=body, headers=all_headers, content_type="application/json", received_at=now)


def sdk_header(body: bytes, secret: str = SECRET, timestamp: int | None = None) -> str:
    return WebhookSignature.generate_signature_header(body.decode(), secret, timestamp=timestamp)


def test_sdk_signature_accepted_and_mapped(build, check_event):
    now = int(time.time())
    header = sdk_header(BODY, timestamp=now)
    assert stripe.Webhook.construct_event(BODY, header, SECRET).id == "evt_1"  # the SDK agrees
    provider = build("stripe", "billing", secrets=[SECRET])
    req = request(BODY, header, now)
    provider.verify(req)
    event = provider.to_event(req)
    check_event(event, name="billing", id="evt_1", type="com.stripe.invoice.paid", body=BODY)


def test_correlation_id_header(build, check_event):
    now = int(time.time())
    provider = build("stripe", secrets=[SECRET])
    event = provider.to_event(
        request(BODY, sdk_header(BODY, timestamp=now), now, extra={"x-correlation-id": "c-1"})
    )
    check_event(
        event, name="stripe", id="evt_1", type="com.stripe.invoice.paid", body=BODY, correlationid="c-1"
    )


def test_rotation_second_secret_matches(build):
    now = int(time.time())
    build("stripe", secrets=[OTHER, SECRET]).verify(request(BODY, sdk_header(BODY, timestamp=now), now))


def test_rotation_second_v1_matches(build):
    now = int(time.time())
    good = sdk_header(BODY, timestamp=now).split("v1=")[1]
    header = f"t={now},v1={'0' * 64},v1={good}"
    stripe.Webhook.construct_event(BODY, header, SECRET)  # the SDK accepts it too
    build("stripe", secrets=[SECRET]).verify(request(BODY, header, now))


def test_v0_is_ignored(build):
    now = int(time.time())
    good = sdk_header(BODY, timestamp=now).split("v1=")[1]
    with pytest.raises(Unauthorized, match="no v1"):
        build("stripe", secrets=[SECRET]).verify(request(BODY, f"t={now},v0={good}", now))


@pytest.mark.parametrize(
    ("header", "body", "match"),
    [
        (None, BODY, "missing"),
        ("", BODY, "missing"),
        ("garbage", BODY, "no v1"),
        ("WRONG", BODY, "mismatch"),  # signed with another secret
        ("OK", BODY.replace(b"evt_1", b"evt_2"), "mismatch"),  # tampered body
    ],
)
def test_rejected(build, header, body, match):
    now = int(time.time())
    if header == "WRONG":
        header = sdk_header(BODY, OTHER, timestamp=now)
    elif header == "OK":
        header = sdk_header(BODY, timestamp=now)
    with pytest.raises(Unauthorized, match=match) as exc:
        build("stripe", secrets=[SECRET]).verify(request(body, header, now))
    assert exc.value.status == 401
    assert SECRET not in exc.value.message


def test_stale_timestamp(build):
    now = int(time.time())
    header = sdk_header(BODY, timestamp=now - 301)
    with pytest.raises(Unauthorized, match="too old"):
        build("stripe", secrets=[SECRET]).verify(request(BODY, header, now))


def test_future_timestamp_passes_like_the_sdk(build):
    now = int(time.time())
    header = sdk_header(BODY, timestamp=now + 3600)
    stripe.Webhook.construct_event(BODY, header, SECRET)
    build("stripe", secrets=[SECRET]).verify(request(BODY, header, now))


def test_missing_type_is_422(build):
    now = int(time.time())
    body = json.dumps({"id": "evt_1", "object": "event"}).encode()
    provider = build("stripe", secrets=[SECRET])
    req = request(body, sdk_header(body, timestamp=now), now)
    provider.verify(req)
    with pytest.raises(Unprocessable, match="type") as exc:
        provider.to_event(req)
    assert exc.value.detail[0]["field"] == "type"


def test_non_json_is_400(build):
    now = int(time.time())
    body = b"not json"
    provider = build("stripe", secrets=[SECRET])
    req = request(body, sdk_header(body, timestamp=now), now)
    provider.verify(req)
    with pytest.raises(BadRequest):
        provider.to_event(req)


@pytest.mark.parametrize(
    ("envelope", "attribute"),
    [
        ({"id": "", "type": "invoice.paid"}, "id"),
        ({"id": "  ", "type": "invoice.paid"}, "id"),
        ({"id": "evt\u0000", "type": "invoice.paid"}, "id"),
        ({"id": "e" * 256, "type": "invoice.paid"}, "id"),
        ({"id": "evt_1", "type": "paid\r\nX-Injected: 1"}, "type"),
    ],
)
def test_an_id_or_type_no_cloudevent_may_carry_is_422_naming_it(build, envelope, attribute):
    body = json.dumps(envelope).encode()
    with pytest.raises(InvalidEvent) as exc:
        build("stripe", secrets=[SECRET]).to_event(request(body, None, time.time()))
    assert exc.value.status == 422 and exc.value.detail["attribute"] == attribute


def test_an_over_long_correlation_header_is_422(build):
    req = request(BODY, None, time.time(), extra={"x-correlation-id": "c" * 256})
    with pytest.raises(InvalidEvent, match="correlationid"):
        build("stripe", secrets=[SECRET]).to_event(req)
