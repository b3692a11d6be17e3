"""Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]`, HMAC-SHA256 over `{t}.{body}`.

Matches stripe-python's `WebhookSignature.verify_header`: the key is the whole `whsec_...`
string as UTF-8, every `v1` is tried, `v0` is ignored, and only the past is bounded by the
tolerance (a timestamp in the future passes, as in the SDK).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from hookhub.errors import Unauthorized
from hookhub.events import Event
from hookhub.providers.base import (
    InboundRequest,
    Provider,
    ProviderSettings,
    any_equal,
    check_timestamp,
    hmac_digest,
    parse_envelope,
    register,
    require_header,
)


class StripeSettings(ProviderSettings):
    kind: Literal["stripe"]


class StripeEnvelope(BaseModel):
    id: str
    type: str


@register
class Stripe(Provider[StripeSettings]):
    kind = "stripe"
    settings_model = StripeSettings

    def verify(self, request: InboundRequest) -> None:
        header = require_header(request, "Stripe-Signature")
        timestamp: str | None = None
        signatures: list[bytes] = []
        for item in header.split(","):
            name, _, value = item.strip().partition("=")
            if name == "t":
                timestamp = value
            elif name == "v1":
                signatures.append(value.encode("ascii", "replace"))
        if not signatures:
            raise Unauthorized("no v1 signature in Stripe-Signature")
        check_timestamp(timestamp, self.settings.tolerance, request.received_at, allow_future=True)
        signed = f"{timestamp}.".encode() + request.body
        expected = [hmac_digest(key, signed).hex().encode() for key in self._secrets]
        if not any_equal(signatures, expected):
            raise Unauthorized("signature mismatch")

    def to_event(self, request: InboundRequest) -> Event:
        envelope = parse_envelope(StripeEnvelope, request.body)
        return self.event(request, envelope.id, f"com.stripe.{envelope.type}")
