"""An in-process hub on a chosen broker, driven over HTTP through httpx's ASGI transport, and
real servers on 127.0.0.1 (`hookhub run`'s uvicorn set-up, a functions-framework target) for
what only a socket shows: slow clients, huge headers, hang-ups."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import uvloop

from hookhub.config import parse_config
from hookhub.hub import Hub, close_hub
from hookhub.serving import uvicorn_options
from hookhub.web import create_app

ROOT = Path(__file__).resolve().parents[2]

SECRETS = {
    "stripe": "whsec_test_stripe",
    "github": "It's a Secret to Everybody",
    "standard": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "slack": "8f742231b10e8888abcd99yyyzzz85a5",
    "shopify": "shopify-secret",
}
PRODUCER_TOKEN = "producer-token"


def base_config(broker: str, store: str, namespace: str) -> dict[str, Any]:
    """`store` is a SQLite file in the test's tmp_path: the archive goes beside it."""
    return {
        "broker": broker,
        "store": store,
        "archive": f"file://{Path(store.removeprefix('sqlite:///')).parent}/archive",
        "namespace": namespace,
        "max_body_bytes": 65536,
        "publish_timeout": "2s",
        "providers": {
            "stripe": {"kind": "stripe", "secrets": ["whsec_old", SECRETS["stripe"]]},
            "github": {"kind": "github", "secrets": [SECRETS["github"]]},
            "svix": {"kind": "standard", "secrets": [SECRETS["standard"]]},
            "slack": {"kind": "slack", "secrets": [SECRETS["slack"]]},
            "shop": {"kind": "shopify", "secrets": [SECRETS["shopify"]]},
            "hotmart": {"kind": "hotmart", "token": "hottok-secret"},
        },
        "producers": {"billing": {"token": PRODUCER_TOKEN}},
    }


@dataclass
class HubClient:
    client: httpx.AsyncClient
    hub: Hub

    async def enqueued(self) -> int:
        """Messages waiting in every queue of this hub's namespace: the proof of (non-)enqueueing."""
        return sum((await self.hub.broker.queue_depths()).values())


@contextlib.asynccontextmanager
async def running_hub(config: dict[str, Any], *, archiving: bool = True) -> AsyncIterator[HubClient]:
    """Without `archiving` the archiver is stopped once the hub is up, so every accepted event
    stays in the archive queue and `enqueued` proves it was (or was not) enqueued."""
    app = create_app(parse_config(config, environ={}))
    async with app.router.lifespan_context(app):
        if not archiving and app.state.hub.archiver is not None:
            await app.state.hub.archiver.stop()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            yield HubClient(client, app.state.hub)


@pytest.fixture(params=["sqlite", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def broker_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/broker.db"
    return str(request.getfixturevalue("rabbitmq_url"))


@pytest.fixture
async def hub(broker_url: str, tmp_path: Any, namespace: str) -> AsyncIterator[HubClient]:
    async with running_hub(
        base_config(broker_url, f"sqlite:///{tmp_path}/store.db", namespace), archiving=False
    ) as hub_client:
        yield hub_client
        await delete_namespace(broker_url, hub_client.hub)


async def delete_namespace(broker_url: str, hub: Hub) -> None:
    """Remove a test's RabbitMQ queues and exchanges, delay tiers included (SQLite files vanish
    with tmp_path). Quorum queues are heavy: left behind, they exhaust the server's file handles."""
    if not broker_url.startswith("amqp"):
        return
    import asyncio

    from tests.broker._support import delete_namespace_queues

    await asyncio.to_thread(delete_namespace_queues, broker_url, hub.topology.namespace)


Signer = Callable[..., tuple[bytes, dict[str, str]]]


@dataclass
class LiveServer:
    """A uvicorn server in a thread of the test process, so tests can shorten its timeouts."""

    port: int
    loop: asyncio.AbstractEventLoop

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run `coro` on the server's event loop (where its hub lives)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve_in_thread(app: Any, **options: Any) -> Iterator[LiveServer]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="info", **options))
    loops: list[asyncio.AbstractEventLoop] = []

    def run() -> None:
        loop = uvloop.new_event_loop()  # as `hookhub run` (loop="uvloop")
        loops.append(loop)
        loop.run_until_complete(server.serve())
        loop.close()

    thread = threading.Thread(target=run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("server did not start")
        time.sleep(0.05)
    try:
        yield LiveServer(port, loops[0])
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture
def run_server(tmp_path: Path, namespace: str) -> Iterator[LiveServer]:
    """`hookhub run`'s server: the hub app on uvicorn with the options cli.py passes."""
    config = base_config(f"sqlite:///{tmp_path}/broker.db", f"sqlite:///{tmp_path}/store.db", namespace)
    app = create_app(parse_config(config, environ={}), dispatch=False)
    with serve_in_thread(app, lifespan="on", **uvicorn_options()) as server:
        yield server


@pytest.fixture
def function_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveServer]:
    """The `events` functions-framework target on uvicorn with httptools, as its gunicorn
    UvicornWorker serves it (`http="auto"`): no hookhub protocol, only what the handlers do."""
    from functions_framework.aio import create_asgi_app

    config = tmp_path / "hookhub.yaml"
    config.write_text(
        f"broker: sqlite:///{tmp_path}/broker.db\nstore: sqlite:///{tmp_path}/store.db\n"
        f"producers:\n  billing: {{token: {PRODUCER_TOKEN}}}\n"
    )
    monkeypatch.setenv("HOOKHUB_CONFIG", str(config))
    app = create_asgi_app(target="events", source=str(ROOT / "main.py"))
    with serve_in_thread(app, http="httptools", log_config=None) as server:
        try:
            yield server
        finally:
            server.call(close_hub())
