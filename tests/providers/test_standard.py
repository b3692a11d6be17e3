"""Standard Webhooks verifier against the standardwebhooks library and the spec's vector."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from standardwebhooks import Webhook

from hookhub.errors import BadRequest, Unauthorized, Unprocessable
from hookhub.providers import InboundRequest

VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

SECRET = "whsec_" + base64.b64encode(b"k" * 24).decode()
OTHER = "whsec_" + base64.b64encode(b"o" * 32).decode()
BODY = b'{"type": "invoice.paid", "data": {"id": 1}}'
MSG_ID = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"


def sign(body: bytes, ts: int, secret: str = SECRET, msg_id: str = MSG_ID) -> str:
    return Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, tz=UTC), body.decode())


def request(
    body: bytes = BODY,
    ts: int | None = None,
    signature: str | None = "auto",
    msg_id: str | None = MSG_ID,
    now: float | None = None,
    prefix: str = "webhook",
    extra: dict[str, str] | None = None,
) -> InboundRequest:
    now = time.time() if now is None else now
    ts = int(now) if ts is None else ts
    if signature == "auto":
        signature = sign(body, ts)
    headers = {f"{prefix}-timestamp": str(ts), **(extra or {})}
    if msg_id is not None:
        headers[f"{prefix}-id"] = msg_id
    if signature is not None:
        headers[f"{prefix}-signature"] = signature
    return InboundRequest(body=body, headers=headers, content_type="application/json", received_at=now)


def test_spec_vector(build):
    assert sign(VECTOR_BODY, VECTOR_TS, VECTOR_SECRET, VECTOR_ID) == VECTOR_SIGNATURE
    req = request(VECTOR_BODY, VECTOR_TS, VECTOR_SIGNATURE, VECTOR_ID, now=VECTOR_TS + 1)
    build("standard", secrets=[VECTOR_SECRET]).verify(req)


def test_library_agrees_and_mapping(build, check_event):
    req = request()
    Webhook(SECRET).verify(BODY, dict(req.headers))
    provider = build("standard", "acme", secrets=[SECRET])
    provider.verify(req)
    check_event(provider.to_event(req), name="acme", id=MSG_ID, type="com.acme.invoice.paid", body=BODY)


def test_type_prefix_and_correlation(build, check_event):
    provider = build("standard", "acme", secrets=[SECRET], type_prefix="io.acme.billing")
    event = provider.to_event(request(extra={"x-correlation-id": "c-3"}))
    check_event(
        event, name="acme", id=MSG_ID, type="io.acme.billing.invoice.paid", body=BODY, correlationid="c-3"
    )


def test_svix_aliases(build):
    build("standard", secrets=[SECRET]).verify(request(prefix="svix"))


def test_rotation_second_secret(build):
    build("standard", secrets=[OTHER, SECRET]).verify(request())


def test_several_signatures_skipping_v1a_and_unknown(build):
    now = int(time.time())
    good = sign(BODY, now)
    header = f"v1a,{base64.b64encode(b'x' * 64).decode()} v2,abc v1,{sign(BODY, now, OTHER)[3:]} junk {good}"
    build("standard", secrets=[SECRET]).verify(request(ts=now, signature=header))


def test_unpadded_secret_accepted(build):
    unpadded = "whsec_" + base64.b64encode(b"k" * 25).decode().rstrip("=")
    provider = build("standard", secrets=[unpadded])
    now = int(time.time())
    provider.verify(request(ts=now, signature=sign(BODY, now, unpadded)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"signature": None}, "missing webhook-signature"),
        ({"msg_id": None}, "missing webhook-id"),
        ({"signature": "v1a,abc"}, "no v1"),
        ({"signature": "v1,@@@"}, "no v1"),
        ({"signature": "auto", "msg_id": "msg_other"}, "mismatch"),  # signed for MSG_ID
    ],
)
def test_rejected(build, kwargs, match):
    with pytest.raises(Unauthorized, match=match) as exc:
        build("standard", secrets=[SECRET]).verify(request(**kwargs))
    assert SECRET not in exc.value.message


def test_wrong_secret_and_tampered_body(build):
    provider = build("standard", secrets=[SECRET])
    now = int(time.time())
    with pytest.raises(Unauthorized, match="mismatch"):
        provider.verify(request(ts=now, signature=sign(BODY, now, OTHER)))
    with pytest.raises(Unauthorized, match="mismatch"):
        provider.verify(request(BODY + b" ", ts=now, signature=sign(BODY, now)))


@pytest.mark.parametrize(("offset", "match"), [(-301, "too old"), (301, "future")])
def test_timestamp_outside_tolerance(build, offset, match):
    now = int(time.time())
    with pytest.raises(Unauthorized, match=match):
        build("standard", secrets=[SECRET]).verify(request(ts=now + offset, now=now))


def test_missing_timestamp(build):
    req = request()
    del req.headers["webhook-timestamp"]  # type: ignore[attr-defined]
    with pytest.raises(Unauthorized, match="webhook-timestamp"):
        build("standard", secrets=[SECRET]).verify(req)


def test_missing_type_is_422(build):
    with pytest.raises(Unprocessable, match="type"):
        build("standard", secrets=[SECRET]).to_event(request(b'{"data": {}}'))


def test_missing_id_in_to_event_is_422(build):
    with pytest.raises(Unprocessable, match="webhook-id"):
        build("standard", secrets=[SECRET]).to_event(request(msg_id=None))


def test_non_json_is_400(build):
    with pytest.raises(BadRequest):
        build("standard", secrets=[SECRET]).to_event(request(b"plain text"))


@pytest.mark.parametrize(("secret", "problem"), [("whsec_not*base64!", "not base64"), ("whsec_", "empty")])
def test_bad_secret_is_a_config_error(build, secret, problem):
    with pytest.raises(ValidationError) as exc:
        build("standard", secrets=[secret])
    errors = exc.value.errors(include_input=False)
    assert errors[0]["loc"] == ("secrets",)
    assert f"secrets[0] is {problem}" in errors[0]["msg"]
    assert "not*base64!" not in errors[0]["msg"]
