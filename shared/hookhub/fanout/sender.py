"""One attempt: a single signed HTTP POST of one event to one subscriber.

`Sender.post` speaks CloudEvents binary mode, signs per Standard Webhooks, and reports what
happened as an `AttemptResult`; it never raises for anything the network or the subscriber does,
so every failure reaches the one decision path (`hookhub.fanout.attempts`) as data.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import errno
import functools
import hashlib
import re
import socket
import time
from dataclasses import dataclass
from datetime import UTC
from importlib.metadata import PackageNotFoundError, version

import aiohttp
import yarl

from hookhub.config import SubscriptionConfig
from hookhub.events import REPLAY_EXTENSION, SPECVERSION, Event
from hookhub.signing import sign_with_key, signing_key

try:
    __version__ = version("hookhub")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0"

USER_AGENT = f"hookhub/{__version__}"
MAX_RESPONSE_READ = 64 * 1024  # read (and discard) this much of a response so the connection is reused
MAX_ERROR_BODY_CHARS = 200  # of a non-2xx response body, kept in the attempt's error text


REPLAY_HEADER = "hookhub-replay"  # a resend's REPLAY_EXTENSION goes out as this, not as `ce-*`


def delivery_id(subscription: str, event: Event) -> str:
    """The `webhook-id` of one event's delivery to one subscription: the same on every attempt and
    in every process (a hash, not a random id), so subscribers can deduplicate on it even across
    a hub crash, and the attempt log can number the attempts of a redelivered message."""
    key = f"{subscription}\0{event.source}\0{event.id}"
    replay = event.extensions.get(REPLAY_EXTENSION)
    if replay:  # a resend from the archive is a delivery of its own, numbered afresh
        key += f"\0{replay}"
    digest = hashlib.sha256(key.encode()).digest()
    return "msg_" + base64.b32encode(digest).decode("ascii")[:26].lower()


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one POST got: an HTTP status, or None with an error when no answer came."""

    status: int | None
    latency_ms: float
    error: str | None = None  # short, never a secret: `timeout after 10s`, `HTTP 500: <body start>`
    retry_after: float | None = None  # seconds, from Retry-After on a 429 or 503


# CloudEvents HTTP binding §3.1.3.2: space, `"`, `%` and anything outside printable ASCII are
# percent-encoded (as UTF-8) in header values. It also keeps CR/LF out of the headers.
_HEADER_UNSAFE = re.compile(r"[^\x21\x23\x24\x26-\x7e]")


def _header_value(value: str) -> str:
    if _HEADER_UNSAFE.search(value) is None:  # the usual case: nothing to encode
        return value
    return _HEADER_UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), value)


def cloudevent_headers(event: Event) -> dict[str, str]:
    """The binary-mode `ce-*` headers (and Content-Type) of an event."""
    headers = {
        "ce-specversion": SPECVERSION,
        "ce-id": _header_value(event.id),
        "ce-source": _header_value(event.source),
        "ce-type": _header_value(event.type),
        "ce-time": _header_value(event.time),
        "ce-correlationid": _header_value(event.correlationid),
    }
    if event.subject:
        headers["ce-subject"] = _header_value(event.subject)
    if event.dataschema:
        headers["ce-dataschema"] = _header_value(event.dataschema)
    for name, value in event.extensions.items():
        if name == REPLAY_EXTENSION:
            headers[REPLAY_HEADER] = _header_value(value)
        else:
            headers.setdefault(f"ce-{name}", _header_value(value))
    if event.datacontenttype:
        headers["Content-Type"] = event.datacontenttype
    return headers


class Sender:
    """Posts deliveries over one shared aiohttp session (keep-alive connections per subscriber).

    The connector has no global connection cap: the dispatcher bounds concurrency per
    subscription (`max_in_flight`), and a global cap would let one slow subscriber hold
    connections another one needs. Redirects are not followed (a signed delivery must not be
    replayed to a URL the operator never configured) and no cookies are kept.
    """

    def __init__(self, *, user_agent: str = USER_AGENT, keepalive_timeout: float = 30.0) -> None:
        self._user_agent = user_agent
        self._keepalive_timeout = keepalive_timeout
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _client(self) -> aiohttp.ClientSession:
        """The session, created on first use on the running loop (aiohttp binds it to one loop)."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(
                limit=0, limit_per_host=0, keepalive_timeout=self._keepalive_timeout
            )
            # No session-wide headers or skip list: aiohttp would merge and copy them on every
            # request; `post` passes its own (User-Agent, and Accept-Encoding: identity, since the
            # response is discarded and decompressing it is waste).
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                trust_env=False,  # no proxy or netrc credentials picked up from the environment
            )
            self._loop = loop
        return self._session

    async def post(
        self,
        subscription_name: str,
        sub: SubscriptionConfig,
        event: Event,
        *,
        attempt: int,
        delivery_id: str,
        extra_secrets: tuple[str, ...] = (),
    ) -> AttemptResult:
        """One attempt. Never raises for network or subscriber behaviour: see `AttemptResult`."""
        if sub.url is None:
            return AttemptResult(None, 0.0, f"subscription {subscription_name} has no url")
        headers = cloudevent_headers(event)
        headers["User-Agent"] = self._user_agent
        headers["Accept-Encoding"] = "identity"
        timestamp = int(time.time())
        headers["webhook-id"] = delivery_id
        headers["webhook-timestamp"] = str(timestamp)
        if sub.secret is not None:
            # during a secret rotation both signatures go out, space-separated (Standard Webhooks)
            signatures = []
            for secret in (sub.secret.get_secret_value(), *extra_secrets):
                try:
                    key = signing_key(secret)
                except ValueError as exc:  # a config problem: visible on every attempt, then a dead letter
                    return AttemptResult(None, 0.0, str(exc))
                signatures.append(sign_with_key(key, delivery_id, timestamp, event.data))
            headers["webhook-signature"] = " ".join(signatures)
        headers["hookhub-attempt"] = str(attempt)

        session = self._client()
        started = time.perf_counter()
        try:
            async with session.post(
                _url(str(sub.url)),
                data=event.data,
                headers=headers,
                # no Content-Type unless the event has one (aiohttp would add octet-stream)
                skip_auto_headers=None if event.datacontenttype else _NO_CONTENT_TYPE,
                allow_redirects=False,
                timeout=_timeout(sub.timeout),
            ) as response:
                status = response.status
                retry_header = response.headers.get("Retry-After") if status in (429, 503) else None
                try:
                    body = await _read_bounded(response)
                except (aiohttp.ClientError, TimeoutError, OSError):
                    body = b""  # the status line arrived: that is the answer, the body is not needed
        except TimeoutError:  # aiohttp's own timeouts subclass it too
            return AttemptResult(None, _ms_since(started), f"timeout after {sub.timeout:g}s")
        except (aiohttp.ClientError, OSError, ValueError) as exc:  # ValueError: a header aiohttp refuses
            return AttemptResult(None, _ms_since(started), describe_error(exc))
        latency = _ms_since(started)
        if 200 <= status < 300:
            return AttemptResult(status, latency)
        return AttemptResult(
            status,
            latency,
            _status_error(status, body),
            parse_retry_after(retry_header) if retry_header else None,
        )

    async def close(self) -> None:
        """Close pooled connections (on the loop that opened them)."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


_NO_CONTENT_TYPE = ("Content-Type",)


@functools.lru_cache(maxsize=1024)
def _url(url: str) -> yarl.URL:
    """Parsed once per subscription URL: aiohttp would parse the string on every request."""
    return yarl.URL(url)


@functools.lru_cache(maxsize=64)
def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=seconds)


async def _read_bounded(response: aiohttp.ClientResponse) -> bytes:
    """Up to MAX_RESPONSE_READ bytes; a longer body is cut off and its connection not reused."""
    kept = bytearray()
    while len(kept) < MAX_RESPONSE_READ:
        chunk = await response.content.read(MAX_RESPONSE_READ - len(kept))
        if not chunk:
            break
        kept += chunk
    return bytes(kept)


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _status_error(status: int, body: bytes) -> str:
    text = " ".join(body[: MAX_ERROR_BODY_CHARS * 4].decode("utf-8", "replace").split())
    text = text[:MAX_ERROR_BODY_CHARS]
    note = " (redirects are not followed)" if 300 <= status < 400 else ""
    return f"HTTP {status}{note}: {text}" if text else f"HTTP {status}{note}"


_ERRNO_TEXT = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "connect timed out",
}


def describe_error(exc: BaseException) -> str:
    """A short error text for a failed exchange, never the URL (it may carry credentials)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if isinstance(os_error, socket.gaierror):
            return "DNS lookup failed"
        if isinstance(exc, aiohttp.ClientSSLError):
            return "TLS handshake failed"
        return _ERRNO_TEXT.get(os_error.errno or 0, f"connection failed: {type(os_error).__name__}")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    if isinstance(exc, aiohttp.InvalidURL):
        return "invalid url"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"invalid response ({type(exc).__name__})"
    if isinstance(exc, OSError) and exc.errno in _ERRNO_TEXT:
        return _ERRNO_TEXT[exc.errno]
    if isinstance(exc, ValueError):
        return "invalid request (a header value was refused)"
    return f"connection error ({type(exc).__name__})"


def parse_retry_after(value: str, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value: delay-seconds or an HTTP date (None if neither)."""
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
