"""A small real HTTP server answering the admin API's JSON (issue7-design.md, "Admin API JSON"),
recording every request, for the CLI's tests; the lead's end-to-end tests use the real hub.

Holds no tests itself: tests/test_cli_ops*.py import `fresh_hub`, `invoke` and the checks.
"""

from __future__ import annotations

import atexit
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from typer.testing import CliRunner, Result

from hookhub.cli import app as cli_app

ADMIN_TOKEN = "adm1n-t0ken"


@dataclass
class Seen:
    method: str
    path: str  # decoded
    raw_path: str
    query: dict[str, str]
    authorization: str | None
    body: Any


Answer = tuple[int, Any]  # a str body is sent as text/plain, anything else as JSON
Handler = Callable[[Seen], Answer]


@dataclass
class FakeHub:
    url: str = ""
    requests: list[Seen] = field(default_factory=list)
    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)

    def on(self, method: str, path: str, status: int = 200, body: Any = None) -> None:
        self.routes[(method, path)] = lambda _seen: (status, body)

    def handle(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    def only(self) -> Seen:
        assert len(self.requests) == 1, self.requests
        return self.requests[0]

    async def endpoint(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        seen = Seen(
            method=request.method,
            path=request.url.path,
            raw_path=request.scope["raw_path"].decode(),
            query=dict(request.query_params),
            authorization=request.headers.get("authorization"),
            body=body,
        )
        self.requests.append(seen)
        if seen.authorization != f"Bearer {ADMIN_TOKEN}":
            return JSONResponse(
                {"error": "missing or wrong admin token"}, 401, headers={"WWW-Authenticate": "Bearer"}
            )
        handler = self.routes.get((seen.method, seen.path))
        status, answer = handler(seen) if handler else (404, {"error": f"no route {seen.path}"})
        if status == 204:
            return Response(status_code=204)
        if isinstance(answer, str):
            return PlainTextResponse(answer, status)
        return JSONResponse(answer, status)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_server: tuple[FakeHub, uvicorn.Server, threading.Thread] | None = None


def _serve() -> tuple[FakeHub, uvicorn.Server, threading.Thread]:
    hub = FakeHub()
    routes = [Route("/{path:path}", hub.endpoint, methods=["GET", "POST", "PATCH", "DELETE", "PUT"])]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    hub.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(Starlette(routes=routes), lifespan="off", log_level="warning", loop="asyncio")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "the fake admin API did not start"
    return hub, server, thread


def _stop() -> None:
    if _server is not None:
        _server[1].should_exit = True
        _server[2].join(5)


def fresh_hub() -> FakeHub:
    """The fake admin API (started once per test run) with no routes and no requests recorded."""
    global _server
    if _server is None:
        _server = _serve()
        atexit.register(_stop)
    hub = _server[0]
    hub.requests.clear()
    hub.routes.clear()
    return hub


def invoke(
    hub: FakeHub | None, *args: str, env: dict[str, str | None] | None = None, input: str | None = None
) -> Result:
    """Run `hookhub ARGS` in-process against `hub` (by HOOKHUB_URL), on a wide terminal."""
    base: dict[str, str | None] = {
        "COLUMNS": "200",
        "HOOKHUB_URL": hub.url if hub else None,
        "HOOKHUB_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    return CliRunner().invoke(cli_app, list(args), env={**base, **(env or {})}, input=input)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result


def one_error_line(result: Result, code: int = 1) -> str:
    """The failing run's `error:` line, its last on stderr; no traceback, the expected exit code."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    return errors[0]


def sub(name: str, **changes: Any) -> dict[str, Any]:
    """A subscription as the admin API shows it."""
    base: dict[str, Any] = {
        "name": name,
        "origin": "api",
        "mode": "push",
        "url": f"https://{name}.example.com/hooks",
        "types": ["com.stripe.#"],
        "state": "active",
        "state_reason": "",
        "failing_since": None,
        "queue": f"hookhub.sub.{name}",
        "depth": 0,
        "max_attempts": 8,
        "max_in_flight": 16,
        "rate_limit": None,
        "timeout": 10.0,
        "backoff": {"initial": 1.0, "max": 3600.0, "multiplier": 2.0, "jitter": 1.0},
        "visibility_timeout": None,
        "secret_rotating_until": None,
        "created_at": "2026-12-01T09:00:00Z",
    }
    return {**base, **changes}
