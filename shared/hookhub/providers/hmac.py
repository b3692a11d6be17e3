"""Generic HMAC: for providers without a module, a signature header over the raw body.

Configurable header, algorithm, encoding and prefix. The event id and type come from locators:
`/a/b` is a JSON pointer (RFC 6901) into the body, `header:<Name>` a request header; `type` may
also be a fixed string, used as is, while located types get `type_prefix` (default `com.{name}`).
No timestamp option: a timestamp outside the signed bytes would prove nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import jsonpointer
from pydantic import field_validator

from hookhub.errors import Unauthorized
from hookhub.events import Event
from hookhub.providers.base import (
    InboundRequest,
    Name,
    Provider,
    TypePrefixSettings,
    any_equal,
    expected_digests,
    load_json,
    missing_field,
    register,
    require_header,
)

HEADER_LOCATOR = "header:"
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Locator:
    """Where a value comes from: a JSON pointer, a header, or (types only) a fixed string."""

    source: Literal["pointer", "header", "fixed"]
    value: str

    @classmethod
    def parse(cls, raw: str, *, allow_fixed: bool) -> Locator:
        if raw.startswith("/"):
            try:
                jsonpointer.JsonPointer(raw)
            except jsonpointer.JsonPointerException as exc:
                raise ValueError(f"invalid JSON pointer {raw!r}: {exc}") from None
            return cls("pointer", raw)
        if raw.startswith(HEADER_LOCATOR):
            name = raw.removeprefix(HEADER_LOCATOR).strip()
            if not name:
                raise ValueError(f"{raw!r} names no header")
            return cls("header", name)
        if allow_fixed and raw:
            return cls("fixed", raw)
        expected = "/json/pointer, header:<Name>" + (" or a fixed type" if allow_fixed else "")
        raise ValueError(f"{raw!r} is not a locator (expected {expected})")


class HmacSettings(TypePrefixSettings):
    kind: Literal["hmac"]
    header: Name
    algorithm: Literal["sha1", "sha256", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = ""
    id: str
    type: str

    @field_validator("id")
    @classmethod
    def _id_locator(cls, value: str) -> str:
        Locator.parse(value, allow_fixed=False)
        return value

    @field_validator("type")
    @classmethod
    def _type_locator(cls, value: str) -> str:
        Locator.parse(value, allow_fixed=True)
        return value


@register
class Hmac(Provider[HmacSettings]):
    kind = "hmac"
    settings_model = HmacSettings

    def __init__(self, name: str, settings: HmacSettings) -> None:
        super().__init__(name, settings)
        self.id_locator = Locator.parse(settings.id, allow_fixed=False)
        self.type_locator = Locator.parse(settings.type, allow_fixed=True)
        self.type_prefix = settings.prefix_for(name)

    def verify(self, request: InboundRequest) -> None:
        settings = self.settings
        header = require_header(request, settings.header).strip()
        if not header.startswith(settings.prefix):
            raise Unauthorized(f"{settings.header} must start with {settings.prefix!r}")
        signature = header[len(settings.prefix) :]
        if settings.encoding == "hex":
            signature = signature.lower()
        expected = expected_digests(self._secrets, request.body, settings.algorithm, settings.encoding)
        if not any_equal([signature.encode("utf-8")], expected):
            raise Unauthorized("signature mismatch")

    def to_event(self, request: InboundRequest) -> Event:
        body: Any = _MISSING
        if "pointer" in (self.id_locator.source, self.type_locator.source):
            body = load_json(request.body)
        event_id = _locate(self.id_locator, request, body)
        if self.type_locator.source == "fixed":
            event_type = self.type_locator.value
        else:
            located = _locate(self.type_locator, request, body)
            event_type = f"{self.type_prefix}.{located}"
        return self.event(request, event_id, event_type)


def _locate(locator: Locator, request: InboundRequest, body: Any) -> str:
    """The located value as a non-empty string, or a 422 naming the pointer or header."""
    if locator.source == "header":
        value = request.header(locator.value)
        if not value:
            raise missing_field(locator.value, f"missing {locator.value} header")
        return value
    found = jsonpointer.resolve_pointer(body, locator.value, _MISSING)
    if found is _MISSING:
        raise missing_field(locator.value, "not found in the body")
    if isinstance(found, int) and not isinstance(found, bool):
        return str(found)
    if not isinstance(found, str) or not found:
        raise missing_field(locator.value, "must be a non-empty string")
    return found
