"""Mercado Pago: `x-signature: ts=<s>,v1=<hex>`, HMAC-SHA256 hex over a manifest.

The manifest is `id:{data.id};request-id:{x-request-id};ts:{ts};` with the `id` and
`request-id` parts left out when the query parameter or header is missing, exactly as the SDK's
`WebhookSignatureValidator` builds it. The SDK signs `data.id` as received while the docs say an
alphanumeric `data.id` is lower-cased, so both spellings are tried. Like the SDK there is no
timestamp check unless `tolerance` is configured (it defaults to none here).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from hookhub.errors import Unauthorized
from hookhub.events import Event
from hookhub.providers.base import (
    EventId,
    InboundRequest,
    Name,
    Provider,
    ProviderSettings,
    any_equal,
    check_timestamp,
    expected_digests,
    parse_envelope,
    register,
    require_header,
)


class MercadoPagoSettings(ProviderSettings):
    kind: Literal["mercadopago"]
    tolerance: int | None = None  # the SDK checks no timestamp by default


class MercadoPagoEnvelope(BaseModel):
    id: EventId
    action: Name


def manifests(data_id: str | None, request_id: str | None, ts: str) -> list[bytes]:
    """Every manifest the notification may have been signed over (see the module docstring)."""
    ids: list[str | None] = [data_id]
    if data_id and data_id.isascii() and data_id.isalnum() and data_id.lower() != data_id:
        ids.append(data_id.lower())
    result = []
    for id_ in ids:
        parts = [f"id:{id_}"] if id_ else []
        if request_id:
            parts.append(f"request-id:{request_id}")
        parts.append(f"ts:{ts}")
        result.append((";".join(parts) + ";").encode("utf-8"))
    return result


def _parse_signature(header: str) -> tuple[str | None, str | None]:
    ts = v1 = None
    for part in header.split(","):
        key, sep, value = part.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not value:
            continue
        if key == "ts":
            ts = value
        elif key == "v1":
            v1 = value
    return ts, v1


@register
class MercadoPago(Provider[MercadoPagoSettings]):
    kind = "mercadopago"
    settings_model = MercadoPagoSettings

    def verify(self, request: InboundRequest) -> None:
        ts, signature = _parse_signature(require_header(request, "x-signature"))
        if not ts or not ts.isdigit():
            raise Unauthorized("missing or invalid ts in x-signature")
        if not signature:
            raise Unauthorized("no v1 signature in x-signature")
        check_timestamp(ts, self.settings.tolerance, request.received_at, name="x-signature ts")
        request_id = (request.header("x-request-id") or "").strip() or None
        data_id = request.query.get("data.id", "").strip() or None
        expected = [
            digest
            for manifest in manifests(data_id, request_id, ts)
            for digest in expected_digests(self._secrets, manifest)
        ]
        if not any_equal([signature.lower().encode("utf-8")], expected):
            raise Unauthorized("signature mismatch")

    def to_event(self, request: InboundRequest) -> Event:
        envelope = parse_envelope(MercadoPagoEnvelope, request.body)
        return self.event(request, envelope.id, f"com.mercadopago.{envelope.action}")
