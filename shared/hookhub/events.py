"""The event as hookhub carries it: CloudEvents 1.0 attributes plus the data bytes, untouched.

A plain slotted dataclass rather than the cloudevents SDK object on the hot path: ingest builds
thousands a second, and the SDK's attribute dict and validation cost more than the whole publish.
`to_cloudevent`/`from_cloudevent` convert at the edges where the SDK does real work.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cloudevents.http import CloudEvent

SPECVERSION = "1.0"
CORE_ATTRIBUTES = ("specversion", "id", "source", "type", "time", "datacontenttype", "dataschema", "subject")


def utc_now_iso() -> str:
    """The current time as an RFC 3339 string, millisecond precision, UTC."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Event:
    """One CloudEvent: `data` is the body exactly as received, never re-encoded."""

    id: str
    source: str
    type: str
    data: bytes
    datacontenttype: str | None = None
    time: str = field(default_factory=utc_now_iso)
    correlationid: str = ""
    subject: str | None = None
    dataschema: str | None = None
    extensions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.correlationid:
            self.correlationid = self.id

    @property
    def key(self) -> tuple[str, str]:
        """What makes an event unique: CloudEvents' own rule, source plus id."""
        return (self.source, self.id)

    def attributes(self) -> dict[str, str]:
        """Every context attribute that is set, extensions included, as strings."""
        attrs = {"specversion": SPECVERSION, "id": self.id, "source": self.source, "type": self.type}
        for name in ("time", "datacontenttype", "subject", "dataschema"):
            value = getattr(self, name)
            if value:
                attrs[name] = value
        attrs["correlationid"] = self.correlationid
        attrs.update(self.extensions)
        return attrs

    @classmethod
    def from_attributes(cls, attrs: dict[str, Any], data: bytes) -> Event:
        """Rebuild an event from `attributes()` output (broker headers, archive records)."""
        known = {"id", "source", "type", "time", "datacontenttype", "subject", "dataschema", "correlationid"}
        extensions = {k: str(v) for k, v in attrs.items() if k not in known and k != "specversion"}
        return cls(
            id=str(attrs["id"]),
            source=str(attrs["source"]),
            type=str(attrs["type"]),
            data=data,
            datacontenttype=attrs.get("datacontenttype"),
            time=str(attrs.get("time") or utc_now_iso()),
            correlationid=str(attrs.get("correlationid") or attrs["id"]),
            subject=attrs.get("subject"),
            dataschema=attrs.get("dataschema"),
            extensions=extensions,
        )

    def to_cloudevent(self) -> CloudEvent:
        """The cloudevents SDK object, for code that speaks the SDK (e.g. Knative delivery)."""
        return CloudEvent(self.attributes(), self.data)

    @classmethod
    def from_cloudevent(cls, event: CloudEvent) -> Event:
        attrs = dict(event.get_attributes())
        data = event.get_data()
        return cls.from_attributes(attrs, data_to_bytes(data))

    def to_structured(self) -> dict[str, Any]:
        """Structured-mode JSON form; binary data goes in `data_base64`, so nothing is re-encoded."""
        body: dict[str, Any] = dict(self.attributes())
        body["data_base64"] = base64.b64encode(self.data).decode("ascii")
        return body


def data_to_bytes(data: Any) -> bytes:
    """Bytes for a CloudEvent's `data` however the sender gave it (bytes, text or a JSON value)."""
    if data is None:
        return b""
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    if isinstance(data, str):
        return data.encode("utf-8")
    import json

    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
