"""Publish frames marshalled here instead of by `Channel.basic_publish`.

Why the private path: under load, pika's generic per-property encoder is the dominant cost of a
publish. Here the method frame depends only on the exchange and routing key and is cached, the
property flags and header keys are constant, so a message costs a few `bytes` joins. The output
is byte-for-byte what pika produces (the tests compare them); `Publisher` writes the frames with
pika's private `_adapter_emit_data`. Both lean on pika's internals: pika is pinned to the tested
version for that reason.

An event that AMQP cannot carry (a short string over 255 bytes, a content header larger than a
frame) raises `UnencodableEvent` before any of its bytes reach the output: a half-written
message would make the server close the connection every concurrent publisher shares.
"""

from __future__ import annotations

import struct

from pika import frame, spec

from hookhub.broker.base import ATTEMPT_HEADER, HEADER_PREFIX, NOT_BEFORE_HEADER
from hookhub.events import Event

_FRAME_END = b"\xce"
_FRAME_OVERHEAD = 8  # frame header (7) + frame end (1)
_BODY_FRAME = struct.Struct(">BHI")
_PROPS_HEAD = struct.Struct(">HHQH")
_U32 = struct.Struct(">I").pack
_I32 = struct.Struct(">i").pack
_I64 = struct.Struct(">q").pack
_FLAG_CONTENT_TYPE = 1 << 15
_FLAG_HEADERS = 1 << 13
_FLAG_DELIVERY_MODE = 1 << 12
_FLAG_MESSAGE_ID = 1 << 7
_PERSISTENT = b"\x02"
_CACHE_MAX = 10_000  # event types and attribute names are few; bound the caches anyway


class UnencodableEvent(ValueError):
    """AMQP cannot carry this event; nothing of it was written."""


def _shortstr(value: str) -> bytes | None:
    data = value.encode()
    return bytes((len(data),)) + data if len(data) <= 255 else None


def _required_shortstr(value: str, what: str) -> bytes:
    encoded = _shortstr(value)
    if encoded is None:
        raise UnencodableEvent(f"AMQP limits the {what} to 255 bytes: {value[:64]!r}...")
    return encoded


_ATTEMPT_FIELD = _required_shortstr(ATTEMPT_HEADER, "header name") + b"I"  # signed 32-bit
_NOT_BEFORE_FIELD = _required_shortstr(NOT_BEFORE_HEADER, "header name") + b"l"  # signed 64-bit


def schedule_headers(attempt: int, not_before_ms: int) -> bytes:
    """The scheduling headers as encoded table entries (what pika writes for these ints)."""
    return _ATTEMPT_FIELD + _I32(attempt) + _NOT_BEFORE_FIELD + _I64(not_before_ms)


class PublishEncoder:
    """Marshals Basic.Publish + content header + body frames exactly as pika would for
    properties (content_type, headers=message_headers(event), delivery_mode=2, message_id)."""

    def __init__(self, channel_number: int, exchange: str, frame_max: int) -> None:
        self.channel_number = channel_number
        self.exchange = exchange
        self.body_max = frame_max - _FRAME_OVERHEAD
        self._method_frames: dict[str | tuple[str, str], bytes] = {}
        self._keys: dict[str, bytes] = {}  # attribute name -> shortstr(prefix + name) + b"S"
        self._header_frame_head = struct.pack(">BH", spec.FRAME_HEADER, channel_number)
        self._body_frame_head = struct.pack(">BH", spec.FRAME_BODY, channel_number)

    def method_frame(self, routing_key: str, exchange_name: str | None = None) -> bytes:
        cache_key = routing_key if exchange_name is None else (exchange_name, routing_key)
        cached = self._method_frames.get(cache_key)
        if cached is not None:
            return cached
        exchange = _required_shortstr(self.exchange if exchange_name is None else exchange_name, "exchange")
        key = _required_shortstr(routing_key, "routing key (the event type)")
        payload = struct.pack(">HHH", 60, 40, 0) + exchange + key + b"\x00"
        method = _BODY_FRAME.pack(spec.FRAME_METHOD, self.channel_number, len(payload)) + payload + _FRAME_END
        if len(self._method_frames) > _CACHE_MAX:
            self._method_frames.clear()
        self._method_frames[cache_key] = method
        return method

    def _key(self, name: str) -> bytes:
        key = _required_shortstr(HEADER_PREFIX + name, "header name") + b"S"
        if len(self._keys) > _CACHE_MAX:
            self._keys.clear()
        self._keys[name] = key
        return key

    def encode(
        self,
        event: Event,
        out: list[bytes],
        *,
        exchange: str | None = None,
        routing_key: str | None = None,
        extra_headers: bytes = b"",
    ) -> None:
        """Append the frames of one message to `out` (the caller joins a whole batch once).

        By default to the encoder's exchange with the event type as routing key; `schedule`
        passes a delay exchange, the target queue and the encoded `schedule_headers`.
        Raises `UnencodableEvent` with `out` untouched."""
        keys = self._keys
        table: list[bytes] = []
        for name, value in event.attributes().items():
            data = value.encode()
            table += (keys.get(name) or self._key(name), _U32(len(data)), data)
        if extra_headers:
            table.append(extra_headers)
        headers = b"".join(table)
        flags = _FLAG_HEADERS | _FLAG_DELIVERY_MODE
        # content type and id over 255 bytes: the property is omitted, the headers carry them anyway
        content_type = _shortstr(event.datacontenttype) if event.datacontenttype is not None else None
        if content_type is not None:
            flags |= _FLAG_CONTENT_TYPE
        message_id = _shortstr(event.id)
        if message_id is not None:
            flags |= _FLAG_MESSAGE_ID
        body = event.data
        size = len(body)
        props = b"".join(
            (
                _PROPS_HEAD.pack(60, 0, size, flags),
                content_type or b"",
                _U32(len(headers)),
                headers,
                _PERSISTENT,
                message_id or b"",
            )
        )
        if len(props) > self.body_max:
            raise UnencodableEvent(
                f"event {event.id[:64]!r}: its attributes take {len(props)} bytes, "
                f"more than an AMQP frame holds ({self.body_max})"
            )
        method = self.method_frame(event.type if routing_key is None else routing_key, exchange)
        # nothing can fail from here on: the whole message goes out or none of it
        out += (method, self._header_frame_head, _U32(len(props)), props, _FRAME_END)
        self._append_body(body, out)

    def encode_raw(
        self, exchange: str, routing_key: str, properties: spec.BasicProperties, body: bytes, out: list[bytes]
    ) -> None:
        """Append the frames of an arbitrary message (pika's own marshalling: not a hot path).
        Used to move a poison message with whatever headers it came with."""
        try:
            method = frame.Method(
                self.channel_number, spec.Basic.Publish(exchange=exchange, routing_key=routing_key)
            ).marshal()
            header = frame.Header(self.channel_number, len(body), properties).marshal()
        except Exception as exc:  # pika's ShortStringTooLong, an unencodable header value
            raise UnencodableEvent(f"cannot encode the message: {exc!r}") from exc
        if len(header) - _FRAME_OVERHEAD > self.body_max:
            raise UnencodableEvent("the message's properties are larger than an AMQP frame")
        out += (method, header)
        self._append_body(body, out)

    def _append_body(self, body: bytes, out: list[bytes]) -> None:
        size = len(body)
        body_max = self.body_max
        if size <= body_max:
            if size:
                out += (self._body_frame_head, _U32(size), body, _FRAME_END)
            return
        view = memoryview(body)
        for start in range(0, size, body_max):
            chunk = view[start : start + body_max]
            out += (self._body_frame_head, _U32(len(chunk)), chunk.tobytes(), _FRAME_END)
