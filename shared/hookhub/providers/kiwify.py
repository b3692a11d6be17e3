"""Kiwify: query parameter `signature` = lower-hex HMAC-SHA1 of the raw body, keyed by the token.

The id joins `order_id` and `webhook_event_type`: one order goes through several events
(approved, refunded, ...) and each must be its own event, not a duplicate of the first.
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
    TokenSettings,
    any_equal,
    expected_digests,
    parse_envelope,
    register,
)


class KiwifySettings(TokenSettings):
    kind: Literal["kiwify"]


class KiwifyEnvelope(BaseModel):
    order_id: EventId
    webhook_event_type: Name


@register
class Kiwify(Provider[KiwifySettings]):
    kind = "kiwify"
    settings_model = KiwifySettings

    def verify(self, request: InboundRequest) -> None:
        signature = request.query.get("signature", "").strip()
        if not signature:
            raise Unauthorized("missing signature query parameter")
        expected = expected_digests(self._secrets, request.body, algorithm="sha1")
        if not any_equal([signature.lower().encode("utf-8")], expected):
            raise Unauthorized("signature mismatch")

    def to_event(self, request: InboundRequest) -> Event:
        envelope = parse_envelope(KiwifyEnvelope, request.body)
        event_id = f"{envelope.order_id}:{envelope.webhook_event_type}"
        return self.event(request, event_id, f"com.kiwify.{envelope.webhook_event_type}")
