"""GitHub: `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 of the raw body.

The id is the delivery GUID (shared by every hook subscribed to the event, so dedup is per
provider instance, which the CloudEvents key `(source, id)` already gives). Only JSON bodies are
accepted: a form-encoded hook would put the whole payload in one `payload=` field.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from hookhub.errors import BadRequest, Unauthorized
from hookhub.events import Event
from hookhub.providers.base import (
    InboundRequest,
    Name,
    Provider,
    ProviderSettings,
    any_equal,
    expected_digests,
    is_form_encoded,
    parse_envelope,
    parse_headers,
    register,
)

SIGNATURE_HEADER = "X-Hub-Signature-256"


class GitHubSettings(ProviderSettings):
    kind: Literal["github"]


class GitHubHeaders(BaseModel):
    delivery: Name = Field(alias="X-GitHub-Delivery")
    event: Name = Field(alias="X-GitHub-Event")


class GitHubEnvelope(BaseModel):
    action: str | None = None  # present on most events, absent on e.g. `push` and `ping`


@register
class GitHub(Provider[GitHubSettings]):
    kind = "github"
    settings_model = GitHubSettings

    def verify(self, request: InboundRequest) -> None:
        header = request.header(SIGNATURE_HEADER)
        if not header:
            if request.header("X-Hub-Signature"):
                raise Unauthorized(
                    f"missing {SIGNATURE_HEADER} header (legacy sha1 signatures are not accepted)"
                )
            raise Unauthorized(f"missing {SIGNATURE_HEADER} header")
        scheme, _, signature = header.strip().partition("=")
        if scheme != "sha256" or not signature:
            raise Unauthorized(f"{SIGNATURE_HEADER} must be sha256=<hex>")
        expected = expected_digests(self._secrets, request.body)
        if not any_equal([signature.lower().encode("utf-8")], expected):
            raise Unauthorized("signature mismatch")

    def to_event(self, request: InboundRequest) -> Event:
        if is_form_encoded(request) or request.body.startswith(b"payload="):
            raise BadRequest(
                "form-encoded GitHub webhook: set the webhook's content type to application/json"
            )
        headers = parse_headers(GitHubHeaders, request)
        envelope = parse_envelope(GitHubEnvelope, request.body)
        event_type = f"com.github.{headers.event}"
        if envelope.action:
            event_type += f".{envelope.action}"
        return self.event(request, headers.delivery, event_type)
