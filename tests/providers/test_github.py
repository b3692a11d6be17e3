"""GitHub verifier: the docs' published vector, then the mapping and every refusal."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from hookhub.errors import BadRequest, Unauthorized, Unprocessable
from hookhub.providers import InboundRequest

SECRET = "It's a Secret to Everybody"
BODY = json.dumps({"action": "opened", "issue": {"number": 1}}).encode()
DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def request(
    body: bytes = BODY, signature: str | None = "auto", extra: dict[str, str] | None = None
) -> InboundRequest:
    headers = {"x-github-delivery": DELIVERY, "x-github-event": "issues", **(extra or {})}
    if signature == "auto":
        signature = sign(body)
    if signature is not None:
        headers["x-hub-signature-256"] = signature
    return InboundRequest(body=body, headers=headers, content_type="application/json")


def test_docs_vector(build):
    docs = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert sign(b"Hello, World!") == docs
    build("github", secrets=[SECRET]).verify(request(b"Hello, World!", docs))


def test_mapping_with_action(build, check_event):
    provider = build("github", "gh", secrets=[SECRET])
    req = request()
    provider.verify(req)
    check_event(provider.to_event(req), name="gh", id=DELIVERY, type="com.github.issues.opened", body=BODY)


def test_mapping_without_action_and_correlation(build, check_event):
    body = b'{"ref": "refs/heads/main"}'
    req = request(body, extra={"x-github-event": "push", "x-correlation-id": "corr-9"})
    provider = build("github", secrets=[SECRET])
    provider.verify(req)
    event = provider.to_event(req)
    check_event(event, name="github", id=DELIVERY, type="com.github.push", body=body, correlationid="corr-9")


def test_rotation(build):
    build("github", secrets=["old secret", SECRET]).verify(request())


@pytest.mark.parametrize(
    ("signature", "match"),
    [
        (None, "missing X-Hub-Signature-256"),
        ("", "missing"),
        ("sha1=" + "0" * 40, "sha256=<hex>"),
        ("sha256=", "sha256=<hex>"),
        (sign(BODY, "wrong"), "mismatch"),
        (sign(b"other body"), "mismatch"),
    ],
)
def test_rejected(build, signature, match):
    with pytest.raises(Unauthorized, match=match) as exc:
        build("github", secrets=[SECRET]).verify(request(BODY, signature))
    assert SECRET not in exc.value.message


def test_uppercase_hex_accepted(build):
    build("github", secrets=[SECRET]).verify(request(BODY, sign(BODY).upper().replace("SHA256=", "sha256=")))


def test_legacy_sha1_only_is_named(build):
    req = request(BODY, None, extra={"x-hub-signature": "sha1=abc"})
    with pytest.raises(Unauthorized, match="legacy sha1"):
        build("github", secrets=[SECRET]).verify(req)


@pytest.mark.parametrize("header", ["x-github-delivery", "x-github-event"])
def test_missing_header_is_422_naming_it(build, header):
    req = request()
    del req.headers[header]  # type: ignore[attr-defined]
    with pytest.raises(Unprocessable) as exc:
        build("github", secrets=[SECRET]).to_event(req)
    assert exc.value.detail[0]["field"].lower() == header


def test_action_of_wrong_type_is_422(build):
    with pytest.raises(Unprocessable, match="action"):
        build("github", secrets=[SECRET]).to_event(request(b'{"action": 5}'))


def test_non_json_is_400(build):
    with pytest.raises(BadRequest):
        build("github", secrets=[SECRET]).to_event(request(b"<xml/>"))


def test_form_encoded_is_400_with_advice(build):
    body = b"payload=%7B%22action%22%3A%22opened%22%7D"
    req = InboundRequest(
        body=body,
        headers={
            "x-github-delivery": DELIVERY,
            "x-github-event": "issues",
            "x-hub-signature-256": sign(body),
        },
        content_type="application/x-www-form-urlencoded",
    )
    provider = build("github", secrets=[SECRET])
    provider.verify(req)
    with pytest.raises(BadRequest, match="application/json"):
        provider.to_event(req)
