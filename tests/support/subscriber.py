"""A real HTTP subscriber on 127.0.0.1 whose answers the test scripts, for delivery tests.

It runs aiohttp.web on its own thread and event loop, so a test can drive it the same way from
sync code and from inside an asyncio test (whose loop it never blocks or shares). Every request
is recorded as it arrives (before any stall), and each path answers by a script set on command:

    with Subscriber() as sub:
        sub.fail_times(2, status=503, path="/hooks")   # two 503s, then 200
        ...deliver to sub.url("/hooks")...
        sub.wait_for(3)

`stop()` closes the listening socket and every open connection (a subscriber that vanished:
connection refused); `start()` brings it back on the same port.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

ANY_PATH = "*"


@dataclass(frozen=True, slots=True)
class Received:
    """One request as the subscriber saw it."""

    at: float  # unix seconds, on arrival
    method: str
    path: str
    query: str
    headers: CIMultiDictProxy[str]  # case-insensitive, as HTTP headers are
    body: bytes
    peer_port: int  # the client's source port: equal ports mean one kept-alive connection

    @property
    def ce_id(self) -> str | None:
        return self.headers.get("ce-id")

    def header_dict(self) -> dict[str, str]:
        """Plain dict of the headers (what `standardwebhooks.Webhook.verify` takes)."""
        return dict(self.headers.items())


@dataclass(slots=True)
class Step:
    """One scripted answer; `times=None` repeats it forever, else it is used up after `times`."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0
    times: int | None = None


class Subscriber:
    """A controllable HTTP endpoint that records what it receives (see the module docstring)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, shutdown_timeout: float = 0.2) -> None:
        self.host = host
        self.port = port  # 0 until the first start picks a free one; kept across stop/start
        self._shutdown_timeout = shutdown_timeout
        self._lock = threading.Condition()
        self._received: list[Received] = []
        self._scripts: dict[str, list[Step]] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-subscriber", daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None
        self._closed = False

    # Lifecycle ----------------------------------------------------------------------------

    def start(self) -> Subscriber:
        """Listen (again), on the port chosen by the first start."""
        if self._closed:
            raise RuntimeError("the subscriber is closed")
        if self._runner is None:
            self._runner = self._call(self._start())
        return self

    def stop(self) -> None:
        """Close the socket and every connection: clients now get connection refused."""
        runner, self._runner = self._runner, None
        if runner is not None:
            self._call(runner.cleanup())

    def close(self) -> None:
        """Stop and end the server thread."""
        if self._closed:
            return
        self.stop()
        self._closed = True
        self._call(_cancel_pending())  # stalled handlers: end them here, not at garbage collection
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    @property
    def running(self) -> bool:
        return self._runner is not None

    def __enter__(self) -> Subscriber:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def url(self, path: str = "/") -> str:
        if not self.port:
            raise RuntimeError("start the subscriber first: the port is chosen then")
        return f"http://{self.host}:{self.port}{path}"

    # Behaviour (per path; `path=None` sets the default for every path without its own) ----

    def script(self, *steps: Step, path: str | None = None) -> None:
        """Answer with `steps` in order; the last one should repeat forever (times=None)."""
        with self._lock:
            self._scripts[path or ANY_PATH] = list(steps)

    def ok(self, status: int = 200, *, path: str | None = None) -> None:
        self.script(Step(status), path=path)

    def status(
        self,
        code: int,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        *,
        path: str | None = None,
    ) -> None:
        """Always answer `code` (e.g. 400, 410, or 429 with {"Retry-After": "3"})."""
        self.script(Step(code, dict(headers or {}), body), path=path)

    def fail_times(
        self,
        n: int,
        status: int = 500,
        headers: Mapping[str, str] | None = None,
        *,
        path: str | None = None,
    ) -> None:
        """Answer `status` to the next `n` requests, then 200."""
        self.script(Step(status, dict(headers or {}), times=n), Step(200), path=path)

    def stall(self, seconds: float, status: int = 200, *, path: str | None = None) -> None:
        """Sleep `seconds` before answering each request (a slow or hung subscriber)."""
        self.script(Step(status, delay=seconds), path=path)

    def redirect(self, location: str, status: int = 302, *, path: str | None = None) -> None:
        self.script(Step(status, {"Location": location}), path=path)

    def reset(self) -> None:
        """Forget every request and script: every path answers 200 again."""
        with self._lock:
            self._received.clear()
            self._scripts.clear()

    # What was received --------------------------------------------------------------------

    def requests(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self._received if path is None or r.path == path]

    def ce_ids(self, path: str | None = None) -> set[str]:
        return {r.ce_id for r in self.requests(path) if r.ce_id is not None}

    def wait_for(self, n: int, timeout: float = 5.0, *, path: str | None = None) -> list[Received]:
        """Block until `n` requests (to `path`, if given) arrived; TimeoutError otherwise."""
        self._wait(lambda: len(self.requests(path)) >= n, timeout, f"{n} requests", path)
        return self.requests(path)

    def wait_for_ids(self, n: int, timeout: float = 5.0, *, path: str | None = None) -> set[str]:
        """Block until `n` distinct `ce-id`s arrived (retries of one event count once)."""
        self._wait(lambda: len(self.ce_ids(path)) >= n, timeout, f"{n} distinct ce-ids", path)
        return self.ce_ids(path)

    async def wait_for_async(
        self, n: int, timeout: float = 5.0, *, path: str | None = None
    ) -> list[Received]:
        """`wait_for` for async tests: polls without blocking the test's event loop."""
        await self._wait_async(lambda: len(self.requests(path)) >= n, timeout, f"{n} requests", path)
        return self.requests(path)

    async def wait_for_ids_async(self, n: int, timeout: float = 5.0, *, path: str | None = None) -> set[str]:
        await self._wait_async(lambda: len(self.ce_ids(path)) >= n, timeout, f"{n} distinct ce-ids", path)
        return self.ce_ids(path)

    def _wait(self, done: Any, timeout: float, what: str, path: str | None) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not done():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(self._timeout_message(what, timeout, path))
                self._lock.wait(left)

    async def _wait_async(self, done: Any, timeout: float, what: str, path: str | None) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() >= deadline:
                raise TimeoutError(self._timeout_message(what, timeout, path))
            await asyncio.sleep(0.005)

    def _timeout_message(self, what: str, timeout: float, path: str | None) -> str:
        got = self.requests(path)
        return f"waited {timeout}s for {what}{f' on {path}' if path else ''}; got {len(got)} requests"

    # Server side (runs on the subscriber's own loop) -------------------------------------

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _start(self) -> web.AppRunner:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=self._shutdown_timeout)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        if not self.port:
            self.port = int(runner.addresses[0][1])
        return runner

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        received = Received(
            at=time.time(),
            method=request.method,
            path=request.path,
            query=request.query_string,
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            body=body,
            peer_port=_peer_port(request),
        )
        with self._lock:
            self._received.append(received)
            step = self._next_step(request.path)
            self._lock.notify_all()
        if step.delay:
            await asyncio.sleep(step.delay)
        return web.Response(status=step.status, headers=step.headers, body=step.body)

    def _next_step(self, path: str) -> Step:
        steps = self._scripts.get(path) or self._scripts.get(ANY_PATH)
        if not steps:
            return Step()
        while len(steps) > 1 and steps[0].times is not None and steps[0].times <= 0:
            steps.pop(0)  # used up; the last step is never dropped
        step = steps[0]
        if step.times is not None:
            step.times -= 1
        return step


async def _cancel_pending() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _peer_port(request: web.Request) -> int:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return int(peer[1]) if peer else 0


@contextmanager
def running_subscriber() -> Iterator[Subscriber]:
    """A started subscriber, closed afterwards (for fixtures: `with running_subscriber() as s`)."""
    sub = Subscriber()
    try:
        yield sub.start()
    finally:
        sub.close()
