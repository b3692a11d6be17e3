"""`hookhub run`'s HTTP server settings: uvicorn with httptools, bounded.

uvicorn + httptools has no limit on header size and no timeout while headers arrive, so a
client could hold a connection open forever or make the parser buffer megabytes. The protocol
below counts raw header bytes as they arrive and times the header phase; bodies are bounded in
`web.read_body`, which functions-framework targets share.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("hookhub.web")

MAX_HEADER_BYTES = 32 * 1024  # request target and headers; webhook senders stay far below this
HEADER_TIMEOUT_SECONDS = 10.0  # from connection (or a request's first byte) to its last header


class _HeaderLimit(Exception):
    """Raised from a parser callback to stop parsing a request whose headers are too large."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus the two bounds it lacks: headers larger than
    MAX_HEADER_BYTES get a 431, and a request whose headers are not all in within
    HEADER_TIMEOUT_SECONDS gets a 408 (a silent close if it sent nothing); both close the
    connection. The application never sees such requests, so this runs before any handler.

    httptools buffers a header's value until it is complete, so the callbacks alone would
    bound nothing: raw bytes received while still in the headers are counted too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_headers = True  # the connection opens waiting for a request line
        self._began = False  # a byte of the current request arrived
        self._parsed_bytes = 0  # request target, header names and values, as parsed
        self._raw_bytes = 0  # whole reads that arrived while the headers were incomplete
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer = self.loop.call_later(HEADER_TIMEOUT_SECONDS, self._headers_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers, self._began, self._parsed_bytes, self._raw_bytes = True, True, 0, 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = self._began = False
        self._stop_header_timer()
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        """uvicorn's, except that headers over the limit get a 431 rather than its 400."""
        if self.transport.is_closing():
            return
        counting = self._in_headers  # a read's bytes are all header bytes only if it began in them
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeaderLimit):
                self._refuse_large_headers()
            else:
                self._refuse(400, "Bad Request", "invalid HTTP request")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if not self._in_headers:
            return
        if counting:
            self._raw_bytes += len(data)
            if self._raw_bytes > MAX_HEADER_BYTES:
                self._refuse_large_headers()
                return
        if self._header_timer is None:  # headers split over reads: only now is a timer worth its cost
            self._header_timer = self.loop.call_later(HEADER_TIMEOUT_SECONDS, self._headers_timed_out)

    def _refuse_large_headers(self) -> None:
        self._refuse(431, "Request Header Fields Too Large", f"headers larger than {MAX_HEADER_BYTES} bytes")

    def _count(self, size: int) -> None:
        self._parsed_bytes += size
        if self._parsed_bytes > MAX_HEADER_BYTES:
            raise _HeaderLimit

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if not self._in_headers or self.transport.is_closing():
            return
        if self._began or self._raw_bytes:
            self._refuse(408, "Request Timeout", f"headers not received within {HEADER_TIMEOUT_SECONDS:g}s")
        else:
            self.transport.close()  # a connection opened and never used: nothing to answer

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _refuse(self, status: int, phrase: str, reason: str) -> None:
        self._stop_header_timer()
        body = json.dumps({"error": reason}).encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, phrase.encode(), len(body), body)
        )
        self.transport.close()
        client = {"client": self.client[0]} if self.client else {}
        log.info("request rejected", extra={"status": status, "reason": reason, **client})


def uvicorn_options() -> dict[str, Any]:
    """What `hookhub run` passes to `uvicorn.run`: the bounded protocol (instead of
    `http="httptools"`), and uvicorn's loggers left to `hookhub.logs.configure`."""
    return {"http": BoundedHttpToolsProtocol, "log_config": None, "timeout_keep_alive": 5}
