"""An in-process hub on a chosen broker, driven over HTTP through httpx's ASGI transport."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from hookhub.config import parse_config
from hookhub.hub import Hub
from hookhub.web import create_app

SECRETS = {
    "stripe": "whsec_test_stripe",
    "github": "It's a Secret to Everybody",
    "standard": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "slack": "8f742231b10e8888abcd99yyyzzz85a5",
    "shopify": "shopify-secret",
}
PRODUCER_TOKEN = "producer-token"


def base_config(broker: str, store: str, namespace: str) -> dict[str, Any]:
    return {
        "broker": broker,
        "store": store,
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
async def running_hub(config: dict[str, Any]) -> AsyncIterator[HubClient]:
    app = create_app(parse_config(config, environ={}))
    async with app.router.lifespan_context(app):
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
        base_config(broker_url, f"sqlite:///{tmp_path}/store.db", namespace)
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
