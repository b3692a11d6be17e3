"""What the operations tests share: a hub config with an admin token, producing events through
the producer API, admin calls that must succeed, and polling for what the hub does in the
background (deliveries, archiving, statistics flushes)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from standardwebhooks.webhooks import Webhook

from tests.http.conftest import PRODUCER_TOKEN, SECRETS, HubClient, base_config

ADMIN_TOKEN = "admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
FAST_RETRY = {"max_attempts": 2, "backoff": {"initial": "50ms", "max": "100ms"}, "timeout": "3s"}
WAIT = 15.0
T = TypeVar("T")


def hub_config(
    broker_url: str, tmp_path: Any, namespace: str, **subscriptions: dict[str, Any]
) -> dict[str, Any]:
    """The HTTP tests' config (store and archive in tmp_path) with the admin API on."""
    config = base_config(broker_url, f"sqlite:///{tmp_path}/store.db", namespace)
    config["admin_token"] = ADMIN_TOKEN
    config["subscriptions"] = subscriptions
    return config


def push(url: str, *types: str, **settings: Any) -> dict[str, Any]:
    return {"url": url, "types": list(types), "secret": SECRET, **settings}


async def produce(
    hub: HubClient,
    n: int = 1,
    type_: str = "com.acme.invoice.paid",
    *,
    correlation_id: str | None = None,
) -> list[str]:
    """`n` new events posted as one batch by the configured producer; their ids."""
    ids = [uuid.uuid4().hex for _ in range(n)]
    batch = []
    for k, event_id in enumerate(ids):
        event: dict[str, Any] = {
            "specversion": "1.0",
            "id": event_id,
            "source": "/billing",
            "type": type_,
            "data": {"n": k},
        }
        if correlation_id is not None:
            event["correlationid"] = correlation_id
        batch.append(event)
    response = await hub.client.post(
        "/events",
        json=batch,
        headers={
            "Authorization": f"Bearer {PRODUCER_TOKEN}",
            "Content-Type": "application/cloudevents-batch+json",
        },
    )
    assert response.status_code == 202, response.text
    return ids


async def admin_get(hub: HubClient, path: str, **params: Any) -> dict[str, Any]:
    response = await hub.client.get(f"/admin{path}", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def admin_post(hub: HubClient, path: str, body: Any, status: int = 200) -> dict[str, Any]:
    response = await hub.client.post(f"/admin{path}", json=body, headers=ADMIN)
    assert response.status_code == status, response.text
    return dict(response.json())


async def until(check: Callable[[], Awaitable[T | None]], what: str, timeout: float = WAIT) -> T:
    """Poll `check` until it returns something truthy, which is returned; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = await check()
        if last:
            return last
        assert time.monotonic() < deadline, f"waited {timeout}s for {what}; last answer {last!r}"
        await asyncio.sleep(0.05)


def verified(secret: str, received: Any) -> bool:
    """Whether a delivery's Standard Webhooks signature verifies with `secret`."""
    try:
        Webhook(secret).verify(received.body, received.header_dict())
    except Exception:
        return False
    return True


def stripe_request(
    type_: str = "invoice.paid", *, secret: str = SECRETS["stripe"], event_id: str | None = None
) -> tuple[str, bytes, dict[str, str]]:
    """A Stripe webhook signed with `secret`: its event id, body and headers."""
    event_id = event_id or f"evt_{uuid.uuid4().hex}"
    body = json.dumps({"id": event_id, "type": type_, "object": "event", "data": {"object": {}}}).encode()
    ts = int(time.time())
    sig = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return event_id, body, {"Stripe-Signature": f"t={ts},v1={sig}", "Content-Type": "application/json"}
