"""Records for the store tests, unique per call unless told otherwise."""

from __future__ import annotations

import time
import uuid
from typing import Any

from hookhub.store import AttemptRecord, DeadLetter, IngestRecord


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def ingest(event_id: str | None = None, correlation: str | None = None, **overrides: Any) -> IngestRecord:
    event_id = event_id or uid("evt")
    fields: dict[str, Any] = {
        "source": "/providers/test",
        "event_id": event_id,
        "type": "com.test.created",
        "origin": "test",
        "correlation_id": correlation or event_id,
        "received_at": time.time(),
    }
    fields.update(overrides)
    return IngestRecord(**fields)


def attempt(
    n: int = 1,
    *,
    delivery_id: str | None = None,
    subscription: str = "crm",
    event_id: str | None = None,
    at: float | None = None,
    **overrides: Any,
) -> AttemptRecord:
    attempted_at = time.time() if at is None else at
    fields: dict[str, Any] = {
        "delivery_id": delivery_id or uid("msg"),
        "subscription": subscription,
        "source": "/providers/test",
        "event_id": event_id or uid("evt"),
        "event_type": "com.test.created",
        "correlation_id": "corr",
        "attempt": n,
        "attempted_at": attempted_at,
        "status_code": 503,
        "latency_ms": 12.5,
        "error": "HTTP 503",
        "verdict": "retry",
        "next_attempt_at": attempted_at + 30,
    }
    fields.update(overrides)
    return AttemptRecord(**fields)


def letter(a: AttemptRecord, **overrides: Any) -> DeadLetter:
    fields: dict[str, Any] = {
        "delivery_id": a.delivery_id,
        "subscription": a.subscription,
        "source": a.source,
        "event_id": a.event_id,
        "event_type": a.event_type,
        "correlation_id": a.correlation_id,
        "attributes": {"id": a.event_id, "source": a.source, "type": a.event_type, "tenant": "acme"},
        "data": b'{"x": 1}\x00\xff binary',
        "attempts": a.attempt,
        "last_status": a.status_code,
        "last_error": a.error,
        "dead_at": a.attempted_at,
    }
    fields.update(overrides)
    return DeadLetter(**fields)
