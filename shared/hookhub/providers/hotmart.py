"""Hotmart: no signature at all, the static `X-HOTMART-HOTTOK` token is the only proof.

The token is compared in constant time against every configured token (rotation). Older (v1)
JSON payloads carry it in the body's `hottok` field instead, which is the fallback.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from hookhub.errors import BadRequest, Unauthorized
from hookhub.events import Event
from hookhub.providers.base import (
    EventId,
    InboundRequest,
    Name,
    Provider,
    TokenSettings,
    any_equal,
    load_json,
    parse_envelope,
    register,
)

TOKEN_HEADER = "X-HOTMART-HOTTOK"


class HotmartSettings(TokenSettings):
    kind: Literal["hotmart"]


class HotmartEnvelope(BaseModel):
    id: EventId
    event: Name


def _body_token(body: bytes) -> str | None:
    try:
        parsed = load_json(body)
    except BadRequest:
        return None
    token = parsed.get("hottok") if isinstance(parsed, dict) else None
    return token if isinstance(token, str) and token else None


@register
class Hotmart(Provider[HotmartSettings]):
    kind = "hotmart"
    settings_model = HotmartSettings

    def verify(self, request: InboundRequest) -> None:
        token = request.header(TOKEN_HEADER) or _body_token(request.body)
        if not token:
            raise Unauthorized(f"missing {TOKEN_HEADER} header")
        if not any_equal([token.strip().encode("utf-8")], self._secrets):
            raise Unauthorized(f"{TOKEN_HEADER} does not match")

    def to_event(self, request: InboundRequest) -> Event:
        envelope = parse_envelope(HotmartEnvelope, request.body)
        return self.event(request, envelope.id, f"com.hotmart.{envelope.event.lower()}")
