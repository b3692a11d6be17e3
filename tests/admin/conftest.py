"""A real hub (memory broker, SQLite store, file archive) behind the admin API, wired the way
the hub's own app serves it (`admin_route` inside a Starlette app), driven over httpx."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from hookhub.admin import admin_route, create_admin_app
from hookhub.config import parse_config
from hookhub.hub import Hub

TOKEN = "admin-token-\u00e9"  # a non-ASCII token: compared as bytes
AUTH = {"Authorization": f"Bearer {TOKEN}".encode()}  # sent as UTF-8 bytes
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
FILE_SUB = "filesub"


def admin_config(tmp_path: Path, namespace: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "broker": "memory://",
        "store": f"sqlite:///{tmp_path}/store.db",
        "archive": f"file://{tmp_path}/archive",
        "namespace": namespace,
        "admin_token": TOKEN,
        "producers": {"billing": {"token": "producer-token"}},
        "subscriptions": {
            FILE_SUB: {"url": "http://127.0.0.1:9/hook", "types": ["com.test.#"], "secret": SECRET}
        },
    }
    config.update(overrides)
    return config


def admin_app(hub: Hub) -> Starlette:
    """The admin API as the hub's app mounts it."""

    async def get_hub() -> Hub:
        return hub

    return Starlette(routes=[admin_route(create_admin_app(get_hub))])


@dataclass
class Admin:
    client: httpx.AsyncClient
    hub: Hub


@contextlib.asynccontextmanager
async def running_admin(config: dict[str, Any]) -> AsyncIterator[Admin]:
    hub = Hub(parse_config(config, environ={}))
    await hub.start()
    try:
        transport = httpx.ASGITransport(app=admin_app(hub))
        async with httpx.AsyncClient(transport=transport, base_url="http://hub", headers=AUTH) as client:
            yield Admin(client, hub)
    finally:
        await hub.close()


@pytest.fixture
async def admin(tmp_path: Path, namespace: str) -> AsyncIterator[Admin]:
    async with running_admin(admin_config(tmp_path, namespace)) as running:
        yield running
