"""The registry and the verification and envelope helpers every provider builds on."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field, SecretStr, ValidationError

from hookhub.errors import BadRequest, Unauthorized, Unprocessable
from hookhub.providers import InboundRequest, Provider, ProviderSettings, known_kinds, provider_class
from hookhub.providers.base import (
    EventId,
    any_equal,
    check_timestamp,
    expected_digests,
    missing_field,
    parse_envelope,
    parse_headers,
    register,
    require_header,
    validate_envelope,
)

ALL_KINDS = ["github", "hmac", "hotmart", "kiwify", "mercadopago", "shopify", "slack", "standard", "stripe"]


def test_every_kind_is_registered():
    assert known_kinds() == ALL_KINDS
    for kind in ALL_KINDS:
        cls = provider_class(kind)
        assert cls.kind == kind
        assert cls.settings_model.model_fields["kind"].annotation == Literal[kind]


def test_unknown_kind_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown provider kind 'paypal'.*stripe"):
        provider_class("paypal")


def test_registering_a_kind_twice_fails():
    class Again(Provider[ProviderSettings]):
        kind = "stripe"
        settings_model = ProviderSettings

    with pytest.raises(RuntimeError, match="twice"):
        register(Again)


@pytest.mark.parametrize("kind", [k for k in ALL_KINDS if k not in ("hotmart", "kiwify")])
def test_settings_reject_typos_and_missing_secrets(kind):
    model = provider_class(kind).settings_model
    extra = {"header": "X-Sig", "id": "/id", "type": "t"} if kind == "hmac" else {}
    with pytest.raises(ValidationError, match="secretz"):
        model.model_validate({"kind": kind, "secretz": ["s"], **extra})
    with pytest.raises(ValidationError, match="secrets is required"):
        model.model_validate({"kind": kind, **extra})
    with pytest.raises(ValidationError, match=r"secrets\[1\] is empty"):
        model.model_validate({"kind": kind, "secrets": ["whsec_c2VjcmV0", " "], **extra})


def test_wrong_kind_literal_is_rejected():
    with pytest.raises(ValidationError):
        provider_class("github").settings_model.model_validate({"kind": "shopify", "secrets": ["s"]})


def test_token_settings_fold_into_secrets():
    settings = provider_class("kiwify").settings_model.model_validate(
        {"kind": "kiwify", "token": "t1", "secrets": ["t2"]}
    )
    assert [s.get_secret_value() for s in settings.secret_values()] == ["t1", "t2"]
    assert provider_class("kiwify")("kw", settings)._secrets == [b"t1", b"t2"]
    with pytest.raises(ValidationError, match=r"token \(or secrets\) is required"):
        provider_class("kiwify").settings_model.model_validate({"kind": "kiwify"})


def test_secrets_are_masked_in_settings():
    settings = provider_class("stripe").settings_model.model_validate(
        {"kind": "stripe", "secrets": ["whsec_x"]}
    )
    assert "whsec_x" not in repr(settings)
    assert isinstance(settings.secrets[0], SecretStr)


def test_any_equal_checks_every_pair():
    assert any_equal([b"a", b"b"], [b"c", b"b"])
    assert not any_equal([b"a"], [b"b", b"c"])
    assert not any_equal([], [b"a"])
    assert not any_equal([b"a"], [])


def test_expected_digests_encodings():
    digest = hmac.new(b"k", b"m", hashlib.sha512).digest()
    assert expected_digests([b"k", b"j"], b"m", "sha512") == [
        digest.hex().encode(),
        hmac.new(b"j", b"m", hashlib.sha512).hexdigest().encode(),
    ]
    assert expected_digests([b"k"], b"m", "sha512", "base64") == [base64.b64encode(digest)]
    assert len(expected_digests([b"k"], b"m", "sha1")[0]) == 40


@pytest.mark.parametrize(
    ("raw", "now", "allow_future", "error"),
    [
        ("1000", 1300, False, None),
        ("1000", 1301, False, "too old"),
        ("1300", 1000, False, None),
        ("1301", 1000, False, "future"),
        ("9999", 1000, True, None),
        (None, 1000, False, "missing"),
        ("", 1000, False, "missing"),
        ("12.5", 1000, False, "invalid"),
    ],
)
def test_check_timestamp(raw, now, allow_future, error):
    if error is None:
        assert check_timestamp(raw, 300, now, allow_future=allow_future) == int(raw)
    else:
        with pytest.raises(Unauthorized, match=error):
            check_timestamp(raw, 300, now, allow_future=allow_future)


def test_check_timestamp_without_tolerance():
    assert check_timestamp("1", None, 10**10) == 1


def test_require_header_is_case_insensitive():
    req = InboundRequest(body=b"", headers={"x-sig": "v"})
    assert require_header(req, "X-Sig") == "v"
    with pytest.raises(Unauthorized, match="missing X-Other header"):
        require_header(req, "X-Other")


class Envelope(BaseModel):
    id: EventId
    nested: dict[str, Any]


@pytest.mark.parametrize(
    ("body", "error", "field"),
    [
        (b"not json", BadRequest, None),
        (b"", BadRequest, None),
        (b'{"nested": {}}', Unprocessable, "id"),
        (b'{"id": "", "nested": {}}', Unprocessable, "id"),
        (b'{"id": true, "nested": {}}', Unprocessable, "id"),
        (b'{"id": 1.5, "nested": {}}', Unprocessable, "id"),
        (b'{"id": "a", "nested": 3}', Unprocessable, "nested"),
        (b"[]", Unprocessable, "body"),
    ],
)
def test_parse_envelope_errors(body, error, field):
    with pytest.raises(error) as exc:
        parse_envelope(Envelope, body)
    if field:
        assert exc.value.detail[0]["field"] == field
        assert field in exc.value.message


def test_parse_envelope_accepts_integer_ids_and_ignores_unknown_fields():
    assert parse_envelope(Envelope, b'{"id": 12, "nested": {}, "extra": 1}').id == "12"


class Headers(BaseModel):
    delivery: str = Field(alias="X-Delivery")


def test_parse_headers_names_the_missing_header():
    assert parse_headers(Headers, InboundRequest(body=b"", headers={"x-delivery": "d"})).delivery == "d"
    with pytest.raises(Unprocessable, match="X-Delivery"):
        parse_headers(Headers, InboundRequest(body=b"", headers={"x-delivery": ""}))
    with pytest.raises(Unprocessable, match="X-Delivery"):
        validate_envelope(Headers, {})


def test_missing_field():
    error = missing_field("X-A", "missing X-A or X-B")
    assert error.status == 422
    assert error.body() == {
        "error": "invalid envelope: X-A",
        "detail": [{"field": "X-A", "problem": "missing X-A or X-B"}],
    }


def test_event_defaults():
    cls = provider_class("github")
    provider = cls("gh", cls.settings_model.model_validate({"kind": "github", "secrets": ["s"]}))
    req = InboundRequest(body=b"{}", headers={}, content_type=None)
    event = provider.event(req, "id-1", "com.github.ping")
    assert (event.source, event.datacontenttype, event.correlationid) == (
        "/providers/gh",
        "application/json",
        "id-1",
    )
