"""The producer API's input: CloudEvents in binary, structured or batch mode, as `Event`s.

Parsed with pydantic rather than the cloudevents SDK's `from_http`: the SDK decodes a JSON body
into Python objects (so the data would not travel byte for byte), has no batch mode, and
reports a missing `ce-id` as a missing specversion. Here a missing attribute is named (400), and
`Event` itself refuses (422) any attribute hookhub could not carry: blank, oversized, control
characters, or an extension whose name breaks the CloudEvents naming rule or shadows a core one.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from typing import Any, Literal

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError

from hookhub.errors import BadRequest, InvalidEvent, Unauthorized
from hookhub.events import REPLAY_EXTENSION, Event, utc_now_iso

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
REQUIRED_BINARY_HEADERS = ("ce-specversion", "ce-id", "ce-source", "ce-type")
_OPTIONAL_BINARY = {"ce-time": "time", "ce-subject": "subject", "ce-dataschema": "dataschema"}
RESERVED_SOURCE_PREFIX = "/providers/"  # only the hub's own provider functions may claim these


class StructuredEvent(BaseModel):
    """One CloudEvent in JSON form; unknown attributes are extensions."""

    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"]
    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    type: str = Field(min_length=1)
    time: str | None = None
    datacontenttype: str | None = None
    subject: str | None = None
    dataschema: str | None = None
    data: Any = None
    data_base64: str | None = None

    def to_event(self, header_correlation: str | None, received: str | None = None) -> Event:
        if self.data_base64 is not None:
            try:
                data = base64.b64decode(self.data_base64, validate=True)
            except (binascii.Error, ValueError):  # ValueError: non-ASCII characters
                raise BadRequest(
                    "data_base64 is not valid base64", detail={"attribute": "data_base64"}
                ) from None
            content_type = self.datacontenttype
        elif self.data is None:
            data, content_type = b"", self.datacontenttype
        elif isinstance(self.data, str) and not _is_json(self.datacontenttype):
            data, content_type = self.data.encode("utf-8"), self.datacontenttype
        else:
            data, content_type = pydantic_core.to_json(self.data), self.datacontenttype or "application/json"
        extensions = {k: _extension_value(k, v) for k, v in (self.model_extra or {}).items()}
        correlation = extensions.pop("correlationid", None) or header_correlation or self.id
        time = self.time or received
        kwargs: dict[str, Any] = {"time": time} if time else {}
        return Event(
            id=self.id,
            source=self.source,
            type=self.type,
            data=data,
            datacontenttype=content_type,
            correlationid=correlation,
            subject=self.subject,
            dataschema=self.dataschema,
            extensions=extensions,
            **kwargs,
        )


_BATCH = TypeAdapter(list[StructuredEvent])


def authenticate(authorization: str | None, tokens: Mapping[str, SecretStr]) -> str:
    """The producer whose bearer token this is; every token is compared, in constant time."""
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("missing bearer token")
    presented = authorization[7:].strip().encode()
    found: str | None = None
    for name, token in tokens.items():
        if hmac.compare_digest(presented, token.get_secret_value().encode()):
            found = name
    if found is None:
        raise Unauthorized("invalid token")
    return found


def parse_events(body: bytes, headers: Mapping[str, str]) -> tuple[list[Event], bool]:
    """The events a producer request carries, and whether it was a batch."""
    content_type = (headers.get("content-type") or "").split(";")[0].strip().lower()
    correlation = headers.get("x-correlation-id")
    if content_type == BATCH:
        try:
            items = _BATCH.validate_json(body)
        except ValidationError as exc:
            raise _attribute_error(exc, batch=True) from None
        if not items:
            raise BadRequest("empty batch")
        received = utc_now_iso()  # one clock read per batch, not per event
        events = []
        for index, item in enumerate(items):
            try:
                events.append(item.to_event(correlation, received))
            except InvalidEvent as exc:
                raise InvalidEvent(f"[{index}].{exc.attribute}", exc.problem) from None
        _check_sources(events)
        return events, True
    if content_type == STRUCTURED:
        try:
            item = StructuredEvent.model_validate_json(body)
        except ValidationError as exc:
            raise _attribute_error(exc, batch=False) from None
        events = [item.to_event(correlation)]
    else:
        events = [_binary_event(body, headers, correlation)]
    _check_sources(events)
    return events, False


def _binary_event(body: bytes, headers: Mapping[str, str], correlation: str | None) -> Event:
    missing = [h[3:] for h in REQUIRED_BINARY_HEADERS if not headers.get(h)]
    if missing:
        raise BadRequest(
            f"missing required attributes: {', '.join(missing)}",
            detail={
                "missing": missing,
                "hint": "send ce-* headers (binary mode) or application/cloudevents+json",
            },
        )
    if headers["ce-specversion"] != "1.0":
        raise BadRequest("unsupported specversion (only 1.0)", detail={"attribute": "specversion"})
    extras = {
        k[3:]: v for k, v in headers.items() if k.startswith("ce-") and k not in REQUIRED_BINARY_HEADERS
    }
    optional = {attr: extras.pop(h[3:]) for h, attr in _OPTIONAL_BINARY.items() if h[3:] in extras}
    correlation = extras.pop("correlationid", None) or correlation or headers["ce-id"]
    return Event(
        id=headers["ce-id"],
        source=headers["ce-source"],
        type=headers["ce-type"],
        data=body,
        datacontenttype=headers.get("content-type"),
        correlationid=correlation,
        extensions=extras,
        **optional,
    )


def _check_sources(events: list[Event]) -> None:
    for event in events:
        if event.source.startswith(RESERVED_SOURCE_PREFIX):
            raise BadRequest(f"source {event.source!r} is reserved for provider webhooks")
        if REPLAY_EXTENSION in event.extensions:  # it marks the hub's own resends
            raise BadRequest(f"the {REPLAY_EXTENSION} extension is reserved for the hub")


def _attribute_error(exc: ValidationError, batch: bool) -> BadRequest:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    if any(e["type"] in ("json_invalid", "json_type") for e in errors):
        return BadRequest("body is not valid JSON")
    if batch and any(e["type"] == "list_type" and not e["loc"] for e in errors):
        return BadRequest("a batch must be a JSON array of CloudEvents")
    missing = sorted({_loc(e["loc"]) for e in errors if e["type"] == "missing"})
    detail = [{"attribute": _loc(e["loc"]), "problem": e["msg"]} for e in errors]
    if missing:
        return BadRequest(f"missing required attributes: {', '.join(missing)}", detail=detail)
    return BadRequest(f"invalid attributes: {', '.join(d['attribute'] for d in detail)}", detail=detail)


def _loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else p for p in loc).replace(".[", "[")


def _is_json(content_type: str | None) -> bool:
    return content_type is None or "json" in content_type


def _extension_value(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int):
        return str(value)
    raise BadRequest(f"extension attribute {name[:40]!r} must be a string, integer or boolean")
