"""Standard Webhooks (and Svix, whose `svix-*` headers are aliases of the `webhook-*` ones).

`webhook-signature` holds space-separated `v1,<base64>` entries (several while the sender rotates
keys); each is HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}` with the key being the
base64-decoded secret after `whsec_`. `v1a` (ed25519) and unknown versions are skipped, as in the
reference libraries. The timestamp must be within the tolerance in both directions.
"""

from __future__ import annotations

import base64
import binascii
from typing import Literal

from pydantic import BaseModel, SecretStr, field_validator

from hookhub.errors import Unauthorized
from hookhub.events import Event
from hookhub.providers.base import (
    InboundRequest,
    Name,
    Provider,
    TypePrefixSettings,
    any_equal,
    check_timestamp,
    hmac_digest,
    missing_field,
    parse_envelope,
    register,
)

SECRET_PREFIX = "whsec_"


def decode_secret(secret: str) -> bytes:
    """The signing key of a `whsec_<base64>` secret (padding optional, as the libraries allow)."""
    encoded = secret.strip().removeprefix(SECRET_PREFIX)
    encoded += "=" * (-len(encoded) % 4)
    return base64.b64decode(encoded, validate=True)


class StandardSettings(TypePrefixSettings):
    kind: Literal["standard"]

    @field_validator("secrets")
    @classmethod
    def _base64_secrets(cls, secrets: list[SecretStr]) -> list[SecretStr]:
        for index, secret in enumerate(secrets):
            try:
                key = decode_secret(secret.get_secret_value())
            except (binascii.Error, ValueError):
                raise ValueError(f"secrets[{index}] is not base64 (expected whsec_<base64>)") from None
            if not key:
                raise ValueError(f"secrets[{index}] is empty after whsec_")
        return secrets


class StandardEnvelope(BaseModel):
    type: Name


def _header(request: InboundRequest, name: str) -> str | None:
    return request.header(f"webhook-{name}") or request.header(f"svix-{name}")


@register
class Standard(Provider[StandardSettings]):
    kind = "standard"
    settings_model = StandardSettings

    def __init__(self, name: str, settings: StandardSettings) -> None:
        super().__init__(name, settings)
        self._keys = [decode_secret(s.get_secret_value()) for s in settings.secret_values()]
        self.type_prefix = settings.prefix_for(name)

    def verify(self, request: InboundRequest) -> None:
        msg_id = _header(request, "id")
        if not msg_id:
            raise Unauthorized("missing webhook-id header")
        header = _header(request, "signature")
        if not header:
            raise Unauthorized("missing webhook-signature header")
        timestamp = _header(request, "timestamp")
        check_timestamp(timestamp, self.settings.tolerance, request.received_at, name="webhook-timestamp")
        signatures: list[bytes] = []
        for entry in header.split():
            version, _, value = entry.partition(",")
            if version != "v1":
                continue  # v1a (ed25519) and future versions
            try:
                signatures.append(base64.b64decode(value, validate=True))
            except (binascii.Error, ValueError):
                continue
        if not signatures:
            raise Unauthorized("no v1 signature in webhook-signature")
        signed = f"{msg_id}.{timestamp}.".encode() + request.body
        expected = [hmac_digest(key, signed) for key in self._keys]
        if not any_equal(signatures, expected):
            raise Unauthorized("signature mismatch")

    def to_event(self, request: InboundRequest) -> Event:
        envelope = parse_envelope(StandardEnvelope, request.body)
        msg_id = _header(request, "id")
        if not msg_id:
            raise missing_field("webhook-id", "missing webhook-id header")
        return self.event(request, msg_id, f"{self.type_prefix}.{envelope.type}")
