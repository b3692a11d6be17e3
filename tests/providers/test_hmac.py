"""The generic HMAC provider: configurable signature, id and type locators."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from pydantic import ValidationError

from hookhub.errors import BadRequest, Unauthorized, Unprocessable
from hookhub.providers import InboundRequest

SECRET = "acme-secret-42"
BODY = json.dumps({"event_id": "e-1", "event_type": "order.paid", "meta": {"seq": 7}}).encode()
ACME: dict[str, Any] = {
    "header": "X-Acme-Signature",
    "algorithm": "sha256",
    "encoding": "hex",
    "prefix": "sha256=",
    "secrets": [SECRET],
    "id": "/event_id",
    "type": "/event_type",
}


def sign(body: bytes, secret: str = SECRET, algorithm: str = "sha256", encoding: str = "hex") -> str:
    digest = hmac.new(secret.encode(), body, getattr(hashlib, algorithm)).digest()
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


def request(
    body: bytes = BODY,
    signature: str | None = None,
    header: str = "x-acme-signature",
    extra: dict[str, str] | None = None,
):
    headers = dict(extra or {})
    headers[header] = "sha256=" + sign(body) if signature is None else signature
    return InboundRequest(body=body, headers=headers, content_type="application/json")


def test_spec_example(build, check_event):
    provider = build("hmac", "acme", **ACME)
    req = request()
    provider.verify(req)
    check_event(provider.to_event(req), name="acme", id="e-1", type="com.acme.order.paid", body=BODY)


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512"])
@pytest.mark.parametrize("encoding", ["hex", "base64"])
def test_algorithms_and_encodings(build, algorithm, encoding):
    settings = ACME | {"algorithm": algorithm, "encoding": encoding, "prefix": ""}
    build("hmac", "acme", **settings).verify(
        request(signature=sign(BODY, algorithm=algorithm, encoding=encoding))
    )


def test_header_locators_fixed_type_and_correlation(build, check_event):
    settings = ACME | {"id": "header:X-Acme-Delivery", "type": "acme.ping"}
    req = request(
        b"not even json",
        "sha256=" + sign(b"not even json"),
        extra={"x-acme-delivery": "d-9", "x-correlation-id": "c"},
    )
    event = build("hmac", "acme", **settings).to_event(req)
    check_event(event, name="acme", id="d-9", type="acme.ping", body=b"not even json", correlationid="c")


def test_header_type_and_pointer_number_id_with_prefix(build, check_event):
    settings = ACME | {"id": "/meta/seq", "type": "header:X-Acme-Event", "type_prefix": "io.acme"}
    event = build("hmac", "acme", **settings).to_event(request(extra={"x-acme-event": "refund"}))
    check_event(event, name="acme", id="7", type="io.acme.refund", body=BODY)


def test_rotation(build):
    build("hmac", "acme", **(ACME | {"secrets": ["old", SECRET]})).verify(request())


@pytest.mark.parametrize(
    ("signature", "match"),
    [
        ("", "missing X-Acme-Signature"),
        (sign(BODY), "must start with 'sha256='"),
        ("sha256=" + sign(BODY, "wrong"), "mismatch"),
        ("sha256=" + sign(b"tampered"), "mismatch"),
        ("sha256=" + sign(BODY, encoding="base64"), "mismatch"),
    ],
)
def test_rejected(build, signature, match):
    with pytest.raises(Unauthorized, match=match) as exc:
        build("hmac", "acme", **ACME).verify(request(signature=signature))
    assert SECRET not in exc.value.message


def test_missing_header(build):
    with pytest.raises(Unauthorized, match="missing"):
        build("hmac", "acme", **ACME).verify(request(header="x-other"))


@pytest.mark.parametrize(
    ("settings", "body", "field"),
    [
        ({}, b'{"event_type": "a"}', "/event_id"),
        ({}, b'{"event_id": "e"}', "/event_type"),
        ({}, b'{"event_id": {"x": 1}, "event_type": "a"}', "/event_id"),
        ({}, b'{"event_id": "e", "event_type": ""}', "/event_type"),
        ({}, b"[1, 2]", "/event_id"),
        ({"id": "header:X-Acme-Delivery"}, BODY, "X-Acme-Delivery"),
    ],
)
def test_unlocatable_is_422_naming_it(build, settings, body, field):
    with pytest.raises(Unprocessable) as exc:
        build("hmac", "acme", **(ACME | settings)).to_event(request(body))
    assert exc.value.detail[0]["field"] == field
    assert field in exc.value.message


def test_non_json_with_pointer_is_400(build):
    with pytest.raises(BadRequest):
        build("hmac", "acme", **ACME).to_event(request(b"<xml/>"))


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"id": "event_id"}, "id"),
        ({"id": "header:"}, "id"),
        ({"type": "/bad~2escape"}, "type"),
        ({"type": ""}, "type"),
        ({"algorithm": "md5"}, "algorithm"),
        ({"encoding": "base32"}, "encoding"),
        ({"header": ""}, "header"),
        ({"secrets": []}, "secrets"),
        ({"hedaer": "typo"}, "hedaer"),
    ],
)
def test_config_errors_name_the_key(build, override, field):
    with pytest.raises(ValidationError) as exc:
        build("hmac", "acme", **(ACME | override))
    errors = exc.value.errors(include_input=False)
    assert any(field in e["loc"] or field in e["msg"] for e in errors)


def test_header_setting_is_required(build):
    settings = {k: v for k, v in ACME.items() if k != "header"}
    with pytest.raises(ValidationError, match="header"):
        build("hmac", "acme", **settings)
