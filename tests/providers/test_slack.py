"""Slack verifier against slack_sdk's SignatureVerifier and the Slack docs vector."""

from __future__ import annotations

import json

import pytest
from slack_sdk.signature import Clock, SignatureVerifier

from hookhub.errors import BadRequest, Unauthorized, Unprocessable
from hookhub.providers import InboundRequest

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
NOW = 1_700_000_000
BODY = json.dumps(
    {"type": "event_callback", "event_id": "Ev08MFMKH6", "event": {"type": "app_mention", "text": "hi"}}
).encode()
DOCS_TS = "1531420618"
DOCS_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
    b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
DOCS_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


class FixedClock(Clock):
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


def sign(body: bytes, ts: int | str = NOW, secret: str = SECRET) -> str:
    signature = SignatureVerifier(secret).generate_signature(timestamp=str(ts), body=body)
    assert signature is not None
    return signature


def request(
    body: bytes = BODY,
    ts: int | str | None = NOW,
    signature: str | None = "auto",
    now: float = NOW,
    content_type: str = "application/json",
    extra: dict[str, str] | None = None,
) -> InboundRequest:
    headers = dict(extra or {})
    if ts is not None:
        headers["x-slack-request-timestamp"] = str(ts)
    if signature == "auto":
        signature = sign(body, ts if ts is not None else NOW)
    if signature is not None:
        headers["x-slack-signature"] = signature
    return InboundRequest(body=body, headers=headers, content_type=content_type, received_at=now)


def test_docs_vector(build):
    assert sign(DOCS_BODY, DOCS_TS) == DOCS_SIGNATURE
    req = request(DOCS_BODY, DOCS_TS, DOCS_SIGNATURE, now=int(DOCS_TS) + 10, content_type="")
    build("slack", secrets=[SECRET]).verify(req)


def test_sdk_agrees_and_mapping(build, check_event):
    req = request()
    assert SignatureVerifier(SECRET, FixedClock(NOW)).is_valid_request(BODY, dict(req.headers))
    provider = build("slack", "workspace", secrets=[SECRET])
    provider.verify(req)
    assert provider.special_reply(req) is None
    event = provider.to_event(req)
    check_event(event, name="workspace", id="Ev08MFMKH6", type="com.slack.app_mention", body=BODY)


def test_correlation_id(build, check_event):
    event = build("slack", secrets=[SECRET]).to_event(request(extra={"x-correlation-id": "c-7"}))
    check_event(
        event, name="slack", id="Ev08MFMKH6", type="com.slack.app_mention", body=BODY, correlationid="c-7"
    )


def test_rotation(build):
    build("slack", secrets=["0ld", SECRET]).verify(request())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"signature": None}, "missing X-Slack-Signature"),
        ({"ts": None, "signature": sign(BODY)}, "missing X-Slack-Request-Timestamp"),
        ({"ts": "yesterday", "signature": sign(BODY)}, "invalid"),
        ({"signature": sign(BODY, secret="wrong")}, "mismatch"),
        ({"signature": sign(BODY, ts=NOW + 1)}, "mismatch"),  # signed for another timestamp
        ({"signature": sign(BODY).replace("v0=", "v1=")}, "mismatch"),
    ],
)
def test_rejected(build, kwargs, match):
    with pytest.raises(Unauthorized, match=match) as exc:
        build("slack", secrets=[SECRET]).verify(request(**kwargs))
    assert SECRET not in exc.value.message


def test_tampered_body(build):
    req = request(signature=sign(BODY))
    req.body = BODY.replace(b"hi", b"ho")
    with pytest.raises(Unauthorized, match="mismatch"):
        build("slack", secrets=[SECRET]).verify(req)


@pytest.mark.parametrize(("offset", "ok"), [(-300, True), (300, True), (-301, False), (301, False)])
def test_tolerance_both_directions(build, offset, ok):
    req = request(ts=NOW + offset)
    assert SignatureVerifier(SECRET, FixedClock(NOW)).is_valid_request(BODY, dict(req.headers)) is ok
    provider = build("slack", secrets=[SECRET])
    if ok:
        provider.verify(req)
    else:
        with pytest.raises(Unauthorized, match="tolerance"):
            provider.verify(req)


def test_url_verification_reply(build):
    challenge = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    body = json.dumps(
        {"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": challenge, "type": "url_verification"}
    ).encode()
    provider = build("slack", secrets=[SECRET])
    req = request(body)
    provider.verify(req)
    reply = provider.special_reply(req)
    assert reply is not None
    assert reply.status == 200
    assert reply.body == {"challenge": challenge}


def test_url_verification_without_challenge_is_422(build):
    with pytest.raises(Unprocessable, match="challenge"):
        build("slack", secrets=[SECRET]).special_reply(request(b'{"type": "url_verification"}'))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"event": {"type": "message"}}', "event_id"),
        (b'{"event_id": "Ev1"}', "event"),
        (b'{"event_id": "Ev1", "event": {}}', "event.type"),
    ],
)
def test_envelope_missing_field_is_422(build, body, field):
    with pytest.raises(Unprocessable) as exc:
        build("slack", secrets=[SECRET]).to_event(request(body))
    assert exc.value.detail[0]["field"] == field
    assert field in exc.value.message


def test_non_json_is_400(build):
    provider = build("slack", secrets=[SECRET])
    req = request(b"not json")
    assert provider.special_reply(req) is None
    with pytest.raises(BadRequest):
        provider.to_event(req)


def test_form_encoded_is_400(build):
    req = request(DOCS_BODY, content_type="application/x-www-form-urlencoded")
    with pytest.raises(BadRequest, match="Events API"):
        build("slack", secrets=[SECRET]).to_event(req)
