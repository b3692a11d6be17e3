"""The request bodies every bench phase sends, built once so all phases send the same bytes.

The webhook body and the batch events' data are both padded to `DATA_SIZE` bytes, and ceiling B
publishes that same data with the headers hookhub puts on a message, so "events/s" means the
same thing in the hub runs and in the ceilings.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

DATA_SIZE = 600
SECRET = "bench-secret"
PRODUCER_TOKEN = "bench-token"
ADMIN_TOKEN = "bench-admin"
BATCH_SIZE = 100
EVENT_TYPE = "com.bench.order.created"
EVENT_SOURCE = "/bench"


def _pad(doc: dict[str, Any], size: int) -> bytes:
    """Compact JSON of `doc` grown to exactly `size` bytes with a filler field."""
    doc = {**doc, "padding": ""}
    raw = json.dumps(doc, separators=(",", ":")).encode()
    doc["padding"] = "x" * max(0, size - len(raw))
    return json.dumps(doc, separators=(",", ":")).encode()


def webhook_body() -> bytes:
    """A GitHub push-like body with an `action`, so the hub types it `com.github.push.opened`."""
    sha = "6dcb09b5b57875f334f61aebed695e2e4193db5e"
    doc = {
        "action": "opened",
        "ref": "refs/heads/main",
        "before": "0" * 40,
        "after": sha,
        "repository": {"id": 1296269, "full_name": "octo/hello-world", "private": False},
        "pusher": {"name": "octocat", "email": "octocat@example.com"},
        "sender": {"login": "octocat", "id": 1, "type": "User"},
        "head_commit": {"id": sha, "message": "Fix all the bugs", "timestamp": "2024-01-01T00:00:00Z"},
    }
    return _pad(doc, DATA_SIZE)


def github_signature(body: bytes, secret: str = SECRET) -> str:
    """The `X-Hub-Signature-256` value GitHub would send for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def event_data() -> bytes:
    """The `data` of each batch event: an order, the same size as the webhook body."""
    doc = {
        "order_id": "ord_000123",
        "customer": {"id": "cus_42", "email": "buyer@example.com", "country": "BR"},
        "items": [{"sku": "SKU-1", "qty": 2, "price": 1990}, {"sku": "SKU-2", "qty": 1, "price": 4990}],
        "total": 8970,
        "currency": "BRL",
        "created_at": "2024-01-01T00:00:00Z",
    }
    return _pad(doc, DATA_SIZE)


def event_template() -> tuple[str, str]:
    """A structured-mode CloudEvent split around its `id`, for Lua to join with unique ids."""
    marker = "@@ID@@"
    doc = {
        "specversion": "1.0",
        "id": marker,
        "source": EVENT_SOURCE,
        "type": EVENT_TYPE,
        "datacontenttype": "application/json",
        "data": json.loads(event_data()),
    }
    prefix, suffix = json.dumps(doc, separators=(",", ":")).split(marker)
    return prefix, suffix


def amqp_headers(event_id: str) -> dict[str, str]:
    """What hookhub puts on a message (CloudEvents AMQP binding, binary mode), for ceiling B."""
    attrs = {
        "specversion": "1.0",
        "id": event_id,
        "source": EVENT_SOURCE,
        "type": EVENT_TYPE,
        "time": "2024-01-01T00:00:00.000Z",
        "datacontenttype": "application/json",
        "correlationid": event_id,
    }
    return {"ce-" + k: v for k, v in attrs.items()}


def hub_config(
    broker: str, store: str, namespace: str, tmp: Any, subscriptions: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Every bench hub's configuration: the GitHub provider and the producer the payloads above
    are signed and authorised for, the run's own namespace and archive, and `subscriptions`."""
    return {
        "broker": broker,
        "store": store,
        "archive": f"file://{tmp}/archive",
        "namespace": namespace,
        "admin_token": ADMIN_TOKEN,
        "providers": {"github": {"kind": "github", "secrets": [SECRET]}},
        "producers": {"bench": {"token": PRODUCER_TOKEN}},
        "subscriptions": subscriptions or {},
    }
