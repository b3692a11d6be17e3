"""Slack (Events API): `X-Slack-Signature: v0=<hex>`, HMAC-SHA256 over `v0:{ts}:{body}`.

As slack_sdk's `SignatureVerifier`: `X-Slack-Request-Timestamp` must be within the tolerance in
both directions. A verified `url_verification` request is answered with its `challenge` instead
of being ingested (Slack sends it once, when the Request URL is saved). Retries carry the same
`event_id`, so the hub's dedup absorbs them.
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
    ProviderSettings,
    Reply,
    any_equal,
    check_timestamp,
    expected_digests,
    is_form_encoded,
    load_json,
    parse_envelope,
    register,
    require_header,
)

TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"


class SlackSettings(ProviderSettings):
    kind: Literal["slack"]


class SlackInnerEvent(BaseModel):
    type: Name


class SlackEnvelope(BaseModel):
    event_id: EventId
    event: SlackInnerEvent


class SlackChallenge(BaseModel):
    challenge: str


@register
class Slack(Provider[SlackSettings]):
    kind = "slack"
    settings_model = SlackSettings

    def verify(self, request: InboundRequest) -> None:
        signature = require_header(request, "X-Slack-Signature").strip()
        timestamp = request.header(TIMESTAMP_HEADER)
        check_timestamp(timestamp, self.settings.tolerance, request.received_at, name=TIMESTAMP_HEADER)
        signed = f"v0:{timestamp}:".encode() + request.body  # the header as sent, as Slack signs it
        expected = [b"v0=" + digest for digest in expected_digests(self._secrets, signed)]
        if not any_equal([signature.encode("utf-8")], expected):
            raise Unauthorized("signature mismatch")

    def special_reply(self, request: InboundRequest) -> Reply | None:
        try:
            body = load_json(request.body)
        except BadRequest:
            return None  # to_event reports the body
        if not isinstance(body, dict) or body.get("type") != "url_verification":
            return None
        challenge = parse_envelope(SlackChallenge, request.body)
        return Reply(status=200, body={"challenge": challenge.challenge})

    def to_event(self, request: InboundRequest) -> Event:
        if is_form_encoded(request):
            raise BadRequest("form-encoded Slack request: only Events API (JSON) requests are ingested")
        envelope = parse_envelope(SlackEnvelope, request.body)
        return self.event(request, envelope.event_id, f"com.slack.{envelope.event.type}")
