"""The fan-out bench's subscriber: a raw ASGI app that answers 200 to every POST and remembers it.

It runs in its own uvicorn process with hookhub's server flags, so the hub (or the bare client of
the ceilings) and the subscriber never share a GIL, and it does next to nothing per request, so
it is never what limits a run: `bench.fanout` reports its CPU share to show that.

Per POST it keeps, by request path, the event id (`ce-id`, else `X-GitHub-Delivery` for webhooks
posted straight to it) and the receive time on `time.perf_counter()`, which on Linux is the
system-wide CLOCK_MONOTONIC: comparable with the send times other processes on this box record.

    GET /stats              {"paths": {path: {count, distinct, first, last}}}
    GET /dump?prefix=/ten   {"paths": {path: [[id, receive time], ...]}}  (first receipt per id)
    anything else GET       200 (readiness probe)
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from bench import procs

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_ID_HEADERS = (b"ce-id", b"x-github-delivery")
_EMPTY_START: Message = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]}
_EMPTY_BODY: Message = {"type": "http.response.body", "body": b""}


class PathLog:
    """What one path received: every request counted, the first receive time of each id kept."""

    __slots__ = ("count", "first", "last", "seen")

    def __init__(self) -> None:
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.seen: dict[str, float] = {}


_logs: dict[str, PathLog] = {}


def _record(path: str, event_id: str, now: float) -> None:
    log = _logs.get(path)
    if log is None:
        log = _logs[path] = PathLog()
        log.first = now
    log.count += 1
    log.last = now
    log.seen.setdefault(event_id, now)


def _stats() -> dict[str, Any]:
    return {
        "paths": {
            path: {"count": log.count, "distinct": len(log.seen), "first": log.first, "last": log.last}
            for path, log in _logs.items()
        }
    }


def _dump(prefix: str) -> dict[str, Any]:
    return {"paths": {path: list(log.seen.items()) for path, log in _logs.items() if path.startswith(prefix)}}


async def _json(send: Send, doc: dict[str, Any]) -> None:
    body = json.dumps(doc, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """POST: read the body, log (path, id, time), answer 200 with no body. GET: stats, or 200."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    now = time.perf_counter()  # on arrival: the body's transfer is the sender's cost
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        more = message.get("more_body", False)
    path = scope["path"]
    if scope["method"] == "POST":
        event_id = ""
        for name, value in scope["headers"]:
            if name in _ID_HEADERS:
                event_id = value.decode("latin-1")
                break
        _record(path, event_id, now)
        await send(_EMPTY_START)
        await send(_EMPTY_BODY)
    elif path == "/stats":
        await _json(send, _stats())
    elif path == "/dump":
        query = parse_qs(scope.get("query_string", b"").decode())
        await _json(send, _dump(query.get("prefix", ["/"])[0]))
    else:
        await send(_EMPTY_START)
        await send(_EMPTY_BODY)


# --- the bench's side ----------------------------------------------------------------------------


def sink_server(log_dir: Path) -> procs.Server:
    """The sink under uvicorn with hookhub's flags (httptools, uvloop, no access log)."""
    port = procs.free_port()
    argv = [
        str(procs.VENV_BIN / "python"),
        "-m",
        "uvicorn",
        "bench.sink:app",
        "--app-dir",
        str(procs.ROOT),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backlog",
        "4096",
        *procs.UVICORN_FLAGS,
    ]
    return procs.Server("sink (uvicorn)", argv, port, log_dir / "sink.log")


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as resp:
        result: dict[str, Any] = json.load(resp)
    return result


def stats(base_url: str) -> dict[str, dict[str, Any]]:
    """Per path: requests received, distinct ids, first and last receive time."""
    return _get(base_url + "/stats")["paths"]


def dump(base_url: str, prefix: str) -> dict[str, dict[str, float]]:
    """Per path under `prefix`: event id -> first receive time."""
    return {path: dict(pairs) for path, pairs in _get(f"{base_url}/dump?prefix={prefix}")["paths"].items()}
