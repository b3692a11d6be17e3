"""Shopify: `X-Shopify-Hmac-Sha256`, base64 HMAC-SHA256 of the raw body.

The id is `X-Shopify-Event-Id` (what Shopify advises to deduplicate on; one event delivered to
several subscriptions shares it), else the per-delivery `X-Shopify-Webhook-Id`. The mapping needs
nothing from the body, so it is not parsed: it passes through byte for byte whatever its format.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from hookhub.errors import Unauthorized
from hookhub.events import Event
from hookhub.providers.base import (
    InboundRequest,
    Name,
    Provider,
    ProviderSettings,
    any_equal,
    expected_digests,
    missing_field,
    parse_headers,
    register,
    require_header,
)

EVENT_ID = "X-Shopify-Event-Id"
WEBHOOK_ID = "X-Shopify-Webhook-Id"


class ShopifySettings(ProviderSettings):
    kind: Literal["shopify"]


class ShopifyHeaders(BaseModel):
    topic: Name = Field(alias="X-Shopify-Topic")
    event_id: str | None = Field(default=None, alias="X-Shopify-Event-Id")
    webhook_id: str | None = Field(default=None, alias="X-Shopify-Webhook-Id")


@register
class Shopify(Provider[ShopifySettings]):
    kind = "shopify"
    settings_model = ShopifySettings

    def verify(self, request: InboundRequest) -> None:
        signature = require_header(request, "X-Shopify-Hmac-Sha256").strip()
        expected = expected_digests(self._secrets, request.body, encoding="base64")
        if not any_equal([signature.encode("utf-8")], expected):
            raise Unauthorized("signature mismatch")

    def to_event(self, request: InboundRequest) -> Event:
        headers = parse_headers(ShopifyHeaders, request)
        event_id = headers.event_id or headers.webhook_id
        if not event_id:
            raise missing_field(EVENT_ID, f"missing {EVENT_ID} and {WEBHOOK_ID} headers")
        return self.event(request, event_id, "com.shopify." + headers.topic.replace("/", "."))
