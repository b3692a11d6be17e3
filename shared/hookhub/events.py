"""The event as hookhub carries it: CloudEvents 1.0 attributes plus the data bytes, untouched.

A plain slotted dataclass rather than the cloudevents SDK object on the hot path: ingest builds
thousands a second, and the SDK's attribute dict and validation cost more than the whole publish.

Every `Event` is valid when constructed (`__post_init__`), whoever builds it: a provider, the
producer API, or a consumer rebuilding one from broker headers. An invalid attribute raises
`InvalidEvent` (422) naming it, so nothing a broker, a store or a subscriber cannot carry is ever
claimed, published or delivered, and no provider module can forget to check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hookhub.errors import InvalidEvent

SPECVERSION = "1.0"
CORE_ATTRIBUTES = ("specversion", "id", "source", "type", "time", "datacontenttype", "dataschema", "subject")
# Names an extension may not take: the core attributes, hookhub's own `correlationid` (a field of
# its own), and `data`/`data_base64` (structured mode's members). A shadowing extension would
# overwrite the real attribute in `attributes()` and on every delivery.
RESERVED_NAMES = frozenset((*CORE_ATTRIBUTES, "correlationid", "data", "data_base64"))
_FIELDS = frozenset((*CORE_ATTRIBUTES, "correlationid"))  # attributes() names that are not extensions

# id, source, type and correlationid travel as AMQP short strings (routing key, message id) and
# fill the store's VARCHAR(255) key columns.
MAX_KEY_BYTES = 255
# Any other attribute value (subject, dataschema, extensions...). Each becomes one HTTP header on
# delivery; 4 KiB stays under the 8 KiB per-line limit of common servers (nginx).
MAX_VALUE_BYTES = 4096
# All attributes together, names included. The broker carries them as one AMQP header table,
# which cannot be split across frames (RabbitMQ's frame is 128 KiB), and on delivery they become
# HTTP headers next to the hub's own: Node and uvicorn refuse requests whose headers exceed 16 KiB
# in total, so 8 KiB fits the frame with room to spare and leaves half that budget to the rest.
MAX_ATTRIBUTES_BYTES = 8192
# CloudEvents: extension names are lower-case ASCII letters and digits; the spec recommends at
# most 20 characters, which hookhub enforces so attribute names stay bounded.
MAX_NAME_CHARS = 20
_EXTENSION_NAME = re.compile(rf"[a-z0-9]{{1,{MAX_NAME_CHARS}}}")

# CloudEvents' String type excludes control characters (U+0000-U+001F, U+007F-U+009F), lone
# surrogates and Unicode noncharacters. NUL in particular is refused by PostgreSQL, and CR/LF
# would split an HTTP header on delivery.
_NONCHARACTERS = "".join(
    f"{chr(plane + 0xFFFE)}{chr(plane + 0xFFFF)}" for plane in range(0x10000, 0x110000, 0x10000)
)
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff" + _NONCHARACTERS + "]")
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)


# The extension the hub puts on a resend from the archive (its job id); producers may not send it.
REPLAY_EXTENSION = "hookhubreplay"


def utc_now_iso() -> str:
    """The current time as an RFC 3339 string, millisecond precision, UTC."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Event:
    """One CloudEvent: `data` is the body exactly as received, never re-encoded.

    Raises `InvalidEvent` when an attribute is not one hookhub can carry (see the module docstring).
    """

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
        # CloudEvents: these are absent or non-empty; an empty one is taken as absent
        if not self.time:
            self.time = utc_now_iso()
        if self.datacontenttype == "":
            self.datacontenttype = None
        if self.subject == "":
            self.subject = None
        if self.dataschema == "":
            self.dataschema = None
        _validate(self)

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
        """Rebuild an event from `attributes()` output (broker headers, archive records).

        Validated like any other: a foreign message with attributes hookhub would never have
        accepted raises `InvalidEvent`, which consumers treat as a poison message.
        """
        extensions = {k: str(v) for k, v in attrs.items() if k not in _FIELDS}
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


def _validate(event: Event) -> None:
    """Check every attribute; `InvalidEvent` names the first one at fault."""
    if not isinstance(event.data, bytes):
        raise InvalidEvent("data", "must be bytes")
    if not _plain_ascii_core(event):
        _check_core(event)  # raises, or passes an event with valid non-ASCII text
    if event.time and _RFC3339.fullmatch(event.time) is None:
        raise InvalidEvent("time", "must be an RFC 3339 timestamp")
    if event.extensions:
        _check_extensions(event)


def _plain_ascii_core(event: Event) -> bool:
    """The fast path: every core attribute short printable ASCII (a single C-level scan)."""
    id_, source, type_, correlation = event.id, event.source, event.type, event.correlationid
    time, content_type, subject, schema = event.time, event.datacontenttype, event.subject, event.dataschema
    try:
        text = "".join(
            (id_, source, type_, correlation, time, content_type or "", subject or "", schema or "")
        )
    except TypeError:  # something is not a string: the slow path says what
        return False
    return (
        text.isascii()
        and text.isprintable()
        and len(text) <= MAX_ATTRIBUTES_BYTES
        and 0 < len(id_) <= MAX_KEY_BYTES
        and 0 < len(source) <= MAX_KEY_BYTES
        and 0 < len(type_) <= MAX_KEY_BYTES
        and len(correlation) <= MAX_KEY_BYTES
        and len(time) <= MAX_VALUE_BYTES
        and len(content_type or "") <= MAX_VALUE_BYTES
        and len(subject or "") <= MAX_VALUE_BYTES
        and len(schema or "") <= MAX_VALUE_BYTES
        and not (id_.isspace() or source.isspace() or type_.isspace())
    )


def _core_size(event: Event) -> int:
    """The UTF-8 size of the core attributes, every one checked."""
    return (
        _required("id", event.id)
        + _required("source", event.source)
        + _required("type", event.type)
        + _optional("correlationid", event.correlationid, MAX_KEY_BYTES)
        + _optional("time", event.time, MAX_VALUE_BYTES)
        + _optional("datacontenttype", event.datacontenttype, MAX_VALUE_BYTES)
        + _optional("subject", event.subject, MAX_VALUE_BYTES)
        + _optional("dataschema", event.dataschema, MAX_VALUE_BYTES)
    )


def _check_core(event: Event) -> None:
    if _core_size(event) > MAX_ATTRIBUTES_BYTES:
        raise InvalidEvent("attributes", f"all attributes together exceed {MAX_ATTRIBUTES_BYTES} bytes")


def _check_extensions(event: Event) -> None:
    extensions = event.extensions
    if not isinstance(extensions, dict):
        raise InvalidEvent("extensions", "must be a mapping of names to strings")
    total = _core_size(event)
    for name, value in extensions.items():
        if not isinstance(name, str) or _EXTENSION_NAME.fullmatch(name) is None:
            shown = name[: MAX_NAME_CHARS + 1] if isinstance(name, str) else repr(type(name))
            raise InvalidEvent(
                shown.encode("ascii", "backslashreplace").decode(),
                f"extension names are 1 to {MAX_NAME_CHARS} lower-case letters or digits",
            )
        if name in RESERVED_NAMES:
            raise InvalidEvent(name, "an extension cannot take a core attribute's name")
        total += len(name) + _optional(name, value, MAX_VALUE_BYTES)
    if total > MAX_ATTRIBUTES_BYTES:
        raise InvalidEvent("attributes", f"all attributes together exceed {MAX_ATTRIBUTES_BYTES} bytes")


def _required(name: str, value: object) -> int:
    """id, source, type: a non-blank string of at most `MAX_KEY_BYTES`; returns its size."""
    size = _optional(name, value, MAX_KEY_BYTES)
    if not size or (isinstance(value, str) and value.isspace()):
        raise InvalidEvent(name, "must not be empty or blank")
    return size


def _optional(name: str, value: object, limit: int) -> int:
    """The UTF-8 size of a valid attribute value (0 when absent); `InvalidEvent` otherwise."""
    if value is None:
        return 0
    if type(value) is not str:
        raise InvalidEvent(name, "must be a string")
    if value.isascii():  # the fast path: one C-level scan each
        size = len(value)
        if not value.isprintable():  # for ASCII, exactly "contains a control character"
            raise InvalidEvent(name, "contains a control character")
    else:
        if _FORBIDDEN.search(value) is not None:
            raise InvalidEvent(name, "contains a control character, a lone surrogate or a noncharacter")
        size = len(value.encode("utf-8"))
    if size > limit:
        raise InvalidEvent(name, f"longer than {limit} bytes")
    return size
