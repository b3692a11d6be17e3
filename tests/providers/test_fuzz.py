"""Every provider, validly signed, over hostile bodies and headers: a valid event or a 4xx.

The signatures are right, so each request gets past verification into the envelope parsing and
the event construction; any exception other than a `Rejection` with a 4xx status (a 500 in
production) fails the test, and so does an event that is not valid all the way through.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers

from hookhub.errors import Rejection, Unauthorized
from hookhub.events import Event
from hookhub.providers import InboundRequest, Provider, Reply, provider_class
from hookhub.providers.mercadopago import manifests
from tests.providers.hostile import check_result, header_value, hostile_body, json_envelope, latin1_text

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOKEN = "tok-fuzz-1"
STANDARD_KEY = b"k" * 24

Signer = Callable[[bytes, Headers, dict[str, str], int], list[tuple[str, str]]]


def _hex(key: bytes, message: bytes, algorithm: str = "sha256") -> str:
    return hmac.new(key, message, getattr(hashlib, algorithm)).hexdigest()


def sign_stripe(body: bytes, headers: Headers, query: dict[str, str], now: int) -> list[tuple[str, str]]:
    return [("stripe-signature", f"t={now},v1={_hex(TOKEN.encode(), f'{now}.'.encode() + body)}")]


def sign_github(body: bytes, headers: Headers, query: dict[str, str], now: int) -> list[tuple[str, str]]:
    return [("x-hub-signature-256", "sha256=" + _hex(TOKEN.encode(), body))]


def sign_shopify(body: bytes, headers: Headers, query: dict[str, str], now: int) -> list[tuple[str, str]]:
    digest = hmac.new(TOKEN.encode(), body, hashlib.sha256).digest()
    return [("x-shopify-hmac-sha256", base64.b64encode(digest).decode())]


def sign_slack(body: bytes, headers: Headers, query: dict[str, str], now: int) -> list[tuple[str, str]]:
    signature = "v0=" + _hex(TOKEN.encode(), f"v0:{now}:".encode() + body)
    return [("x-slack-signature", signature), ("x-slack-request-timestamp", str(now))]


def sign_standard(body: bytes, headers: Headers, query: dict[str, str], now: int) -> list[tuple[str, str]]:
    msg_id = headers.get("webhook-id") or headers.get("svix-id") or ""
    digest = hmac.new(STANDARD_KEY, f"{msg_id}.{now}.".encode() + body, hashlib.sha256).digest()
    return [("webhook-signature", "v1," + base64.b64encode(digest).decode()), ("webhook-timestamp", str(now))]


def sign_hotmart(body: bytes, headers: Headers, query: dict[str, str], now: int) -> list[tuple[str, str]]:
    return [("x-hotmart-hottok", TOKEN)]


def sign_kiwify(body: bytes, headers: Headers, query: dict[str, str], now: int) -> list[tuple[str, str]]:
    query["signature"] = _hex(TOKEN.encode(), body, "sha1")
    return []


def sign_mercadopago(body: bytes, headers: Headers, query: dict[str, str], now: int) -> list[tuple[str, str]]:
    request_id = (headers.get("x-request-id") or "").strip() or None
    data_id = query.get("data.id", "").strip() or None
    manifest = manifests(data_id, request_id, str(now))[0]
    return [("x-signature", f"ts={now},v1={_hex(TOKEN.encode(), manifest)}")]


def sign_hmac(body: bytes, headers: Headers, query: dict[str, str], now: int) -> list[tuple[str, str]]:
    return [("x-acme-signature", "sha256=" + _hex(TOKEN.encode(), body))]


@dataclass(frozen=True)
class Case:
    kind: str
    sign: Signer
    settings: dict[str, Any] = field(default_factory=lambda: {"secrets": [TOKEN]})
    # headers the mapping reads (id, type...): the hostile-header test aims at these
    identity: tuple[str, ...] = ()


HMAC = {"header": "X-Acme-Signature", "prefix": "sha256=", "secrets": [TOKEN]}
CASES = {
    "stripe": Case("stripe", sign_stripe),
    "github": Case("github", sign_github, identity=("x-github-delivery", "x-github-event")),
    "shopify": Case(
        "shopify",
        sign_shopify,
        identity=("x-shopify-topic", "x-shopify-event-id", "x-shopify-webhook-id"),
    ),
    "slack": Case("slack", sign_slack),
    "standard": Case(
        "standard",
        sign_standard,
        settings={"secrets": ["whsec_" + base64.b64encode(STANDARD_KEY).decode()]},
        identity=("webhook-id", "svix-id"),
    ),
    "hotmart": Case("hotmart", sign_hotmart, settings={"token": TOKEN}),
    # no header token: the body's `hottok` is the fallback, parsed before verification
    "hotmart-body-token": Case("hotmart", lambda *_: [], settings={"token": TOKEN}),
    "kiwify": Case("kiwify", sign_kiwify, settings={"token": TOKEN}),
    "mercadopago": Case("mercadopago", sign_mercadopago, identity=("x-request-id",)),
    "hmac-pointer": Case("hmac", sign_hmac, settings=HMAC | {"id": "/id", "type": "/type"}),
    "hmac-header": Case(
        "hmac",
        sign_hmac,
        settings=HMAC | {"id": "header:X-Event-Id", "type": "header:X-Event-Type"},
        identity=("x-event-id", "x-event-type"),
    ),
}


def build(case: Case) -> Provider[Any]:
    cls = provider_class(case.kind)
    return cls(case.kind, cls.settings_model.model_validate({"kind": case.kind, **case.settings}))


PROVIDERS = {name: build(case) for name, case in CASES.items()}


def signed_request(
    case: Case,
    body: bytes,
    headers: list[tuple[str, str]],
    query: dict[str, str],
    content_type: str | None,
) -> InboundRequest:
    """The request as the HTTP layer builds it: raw latin-1 headers, duplicates kept, signed."""
    now = int(time.time())
    unsigned = Headers(raw=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers])
    signature = case.sign(body, unsigned, query, now)
    raw = [(k.encode(), v.encode()) for k, v in signature] + list(unsigned.raw)
    if content_type is not None:
        raw.append((b"content-type", content_type.encode("latin-1")))
    return InboundRequest(
        body=body, headers=Headers(raw=raw), query=query, content_type=content_type, received_at=now
    )


def handle(provider: Provider[Any], request: InboundRequest) -> Event | Rejection | Reply:
    """What the webhook handler does with a request, up to (not including) ingest."""
    try:
        provider.verify(request)
        reply = provider.special_reply(request)
        if reply is not None:
            return reply
        return provider.to_event(request)
    except Rejection as exc:
        return exc


def plausible_headers(case: Case) -> st.SearchStrategy[list[tuple[str, str]]]:
    """Identity headers with ordinary values (so hostile bodies are what is being tested)."""
    values = {
        "x-github-delivery": "d-1",
        "x-github-event": "push",
        "x-shopify-topic": "orders/create",
        "x-shopify-event-id": "e-1",
        "webhook-id": "msg_1",
        "x-request-id": "r-1",
        "x-event-id": "e-1",
        "x-event-type": "paid",
    }
    return st.just([(h, values[h]) for h in case.identity if h in values])


content_types = st.sampled_from([None, "application/json", "application/x-www-form-urlencoded", "ü/ü"])


@pytest.mark.parametrize("name", sorted(CASES))
@FUZZ
@given(data=st.data(), body=hostile_body, content_type=content_types)
def test_hostile_bodies(name: str, data: st.DataObject, body: bytes, content_type: str | None) -> None:
    case = CASES[name]
    headers = data.draw(plausible_headers(case))
    query = {"data.id": "123"} if case.kind == "mercadopago" else {}
    outcome = handle(PROVIDERS[name], signed_request(case, body, headers, query, content_type))
    if isinstance(outcome, Reply):
        assert case.kind == "slack" and outcome.status == 200
        return
    if name != "hotmart-body-token":  # every other request is validly signed
        assert not isinstance(outcome, Unauthorized), outcome.message
    check_result(outcome, body)


header_names = st.sampled_from(
    ["x-correlation-id", "content-type", "x-github-delivery", "ce-id", "x-unknown", "webhook-id", "svix-id"]
)


@pytest.mark.parametrize("name", sorted(CASES))
@FUZZ
@given(
    data=st.data(),
    body=json_envelope() | st.just(b'{"id": "1", "type": "t", "event": "E", "action": "a"}'),
    extra=st.lists(st.tuples(header_names | latin1_text.filter(str.strip), header_value), max_size=4),
    query=st.dictionaries(st.sampled_from(["data.id", "signature", "x"]), st.text(max_size=20), max_size=2),
)
def test_hostile_headers(
    name: str,
    data: st.DataObject,
    body: bytes,
    extra: list[tuple[str, str]],
    query: dict[str, str],
) -> None:
    """Identity headers with hostile values, duplicated, huge, non-ASCII; junk headers besides."""
    case = CASES[name]
    identity = [(h, data.draw(header_value, label=h)) for h in case.identity]
    duplicates = [(h, data.draw(header_value)) for h in case.identity if data.draw(st.booleans())]
    headers = [(k.lower(), v) for k, v in identity + duplicates + extra]
    query = dict(query)
    request = signed_request(case, body, headers, query, "application/json")
    check_result_or_reply(handle(PROVIDERS[name], request), body)


def check_result_or_reply(outcome: Event | Rejection | Reply, body: bytes) -> None:
    if isinstance(outcome, Reply):
        assert outcome.status == 200
        return
    check_result(outcome, body)
