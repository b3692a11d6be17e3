"""Hotmart: a static token in X-HOTMART-HOTTOK (or the body's `hottok`), compared constant-time."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from hookhub.errors import BadRequest, Unauthorized, Unprocessable
from hookhub.providers import InboundRequest

TOKEN = "hottok-3f9c2a1b7e"
BODY = json.dumps(
    {
        "id": "8e5b3c7e-2b0a-4bdb-9c4b-3f5f5a0e8a11",
        "creation_date": 1700000000000,
        "event": "PURCHASE_APPROVED",
        "version": "2.0.0",
        "data": {"product": {"id": 1}},
    }
).encode()


def request(
    body: bytes = BODY, token: str | None = TOKEN, extra: dict[str, str] | None = None
) -> InboundRequest:
    headers = dict(extra or {})
    if token is not None:
        headers["x-hotmart-hottok"] = token
    return InboundRequest(body=body, headers=headers, content_type="application/json")


def test_mapping(build, check_event):
    provider = build("hotmart", "hm", token=TOKEN)
    req = request()
    provider.verify(req)
    event = provider.to_event(req)
    check_event(
        event,
        name="hm",
        id="8e5b3c7e-2b0a-4bdb-9c4b-3f5f5a0e8a11",
        type="com.hotmart.purchase_approved",
        body=BODY,
    )


def test_correlation_and_numeric_id(build, check_event):
    body = b'{"id": 42, "event": "SUBSCRIPTION_CANCELLATION"}'
    event = build("hotmart", token=TOKEN).to_event(request(body, extra={"x-correlation-id": "c"}))
    check_event(
        event,
        name="hotmart",
        id="42",
        type="com.hotmart.subscription_cancellation",
        body=body,
        correlationid="c",
    )


def test_rotation_token_plus_secrets(build):
    build("hotmart", token="old-token", secrets=[TOKEN]).verify(request())
    build("hotmart", secrets=["old-token", TOKEN]).verify(request())


def test_body_hottok_fallback(build):
    body = json.dumps({"hottok": TOKEN, "id": "1", "event": "PURCHASE_COMPLETE"}).encode()
    build("hotmart", token=TOKEN).verify(request(body, token=None))


@pytest.mark.parametrize(
    ("body", "token", "match"),
    [
        (BODY, None, "missing"),
        (BODY, "", "missing"),
        (BODY, "wrong", "does not match"),
        (BODY, TOKEN + "x", "does not match"),
        (b'{"hottok": "wrong"}', None, "does not match"),
        (b"not json", None, "missing"),
    ],
)
def test_rejected(build, body, token, match):
    with pytest.raises(Unauthorized, match=match) as exc:
        build("hotmart", token=TOKEN).verify(request(body, token))
    assert TOKEN not in exc.value.message


@pytest.mark.parametrize(("body", "field"), [(b'{"event": "X"}', "id"), (b'{"id": "1"}', "event")])
def test_missing_field_is_422(build, body, field):
    with pytest.raises(Unprocessable) as exc:
        build("hotmart", token=TOKEN).to_event(request(body))
    assert exc.value.detail[0]["field"] == field


def test_non_json_is_400(build):
    with pytest.raises(BadRequest):
        build("hotmart", token=TOKEN).to_event(request(b"hottok=abc&status=approved"))


@pytest.mark.parametrize("settings", [{}, {"token": ""}, {"token": "t", "tokn": "typo"}])
def test_config_errors(build, settings):
    with pytest.raises(ValidationError):
        build("hotmart", **settings)


def test_deeply_nested_body_is_refused_not_a_crash(build):
    """The body-token fallback parses before verification: nesting must not exhaust the stack."""
    deep = b'{"id": "1", "event": "E", "hottok": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    provider = build("hotmart", token=TOKEN)
    with pytest.raises(Unauthorized, match="missing"):
        provider.verify(request(deep, token=None))
    with pytest.raises(BadRequest):
        provider.to_event(request(deep))
