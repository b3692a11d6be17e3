"""The operator CLI on events against a fake admin API: dead letters (filters, pages, replay,
purge), traces, broker status, rejections and event types."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.test_cli_ops_fake import (
    FakeHub,
    fresh_hub,
    invoke,
    ok,
    one_error_line,
)

DELIVERY = "msg_" + "a" * 26


@pytest.fixture
def fake_hub() -> FakeHub:
    return fresh_hub()


def dead_letter(delivery_id: str, **changes: Any) -> dict[str, Any]:
    base = {
        "delivery_id": delivery_id,
        "subscription": "orders",
        "source": "stripe",
        "event_id": f"evt_{delivery_id[-4:]}",
        "type": "com.stripe.charge.failed",
        "correlation_id": "corr-1",
        "attempts": 8,
        "last_status": 503,
        "last_error": "HTTP 503",
        "dead_at": "2026-12-05T10:00:00Z",
    }
    return {**base, **changes}


def attempt(subscription: str, number: int, **changes: Any) -> dict[str, Any]:
    base = {
        "delivery_id": f"msg_{subscription}",
        "subscription": subscription,
        "attempt": number,
        "attempted_at": f"2026-12-05T10:00:0{number}Z",
        "status_code": 500,
        "latency_ms": 12.5,
        "error": None,
        "verdict": "retry",
        "next_attempt_at": None,
    }
    return {**base, **changes}


def parsed(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_dead_letters_filters_page_and_next_cursor_hint(fake_hub: FakeHub) -> None:
    page = {"dead_letters": [dead_letter(DELIVERY)], "next_cursor": "Y3Vyc29y"}
    fake_hub.on("GET", "/admin/dead-letters", body=page)
    before = datetime.now(UTC)
    result = ok(
        invoke(
            fake_hub,
            "dead-letters",
            "-s",
            "orders",
            "--type",
            "com.stripe.charge.failed",
            "--since",
            "-2h",
            "--until",
            "2026-12-06T00:00:00+01:00",
            "--limit",
            "1",
        )
    )
    query = fake_hub.only().query
    assert query["subscription"] == "orders" and query["type"] == "com.stripe.charge.failed"
    assert query["limit"] == "1" and "cursor" not in query
    assert query["since"].endswith("Z")
    assert abs(parsed(query["since"]) - (before - timedelta(hours=2))) < timedelta(seconds=5)
    assert query["until"] == "2026-12-05T23:00:00Z"
    row = next(line for line in result.stdout.splitlines() if DELIVERY in line)
    for text in ("orders", "com.stripe.charge.failed", "evt_aaaa", "503", "HTTP 503", "2026-12-05T10:00:00Z"):
        assert text in row, text
    assert "--cursor=Y3Vyc29y" in result.stderr and "--subscription=orders" in result.stderr
    fake_hub.requests.clear()
    ok(invoke(fake_hub, "dead-letters", "--cursor", "Y3Vyc29y", "--json"))
    assert fake_hub.only().query == {"cursor": "Y3Vyc29y"}


def test_dead_letters_json_is_the_page(fake_hub: FakeHub) -> None:
    page = {"dead_letters": [dead_letter(DELIVERY)], "next_cursor": None}
    fake_hub.on("GET", "/admin/dead-letters", body=page)
    assert json.loads(ok(invoke(fake_hub, "dead-letters", "--json")).stdout) == page


def test_an_unreadable_time_is_a_usage_error_before_any_request(fake_hub: FakeHub) -> None:
    line = one_error_line(invoke(fake_hub, "dead-letters", "--since", "last tuesday"), 2)
    assert "--since" in line
    one_error_line(invoke(fake_hub, "replay", "orders", "--from", "-2 fortnights"), 2)
    assert fake_hub.requests == []


def test_dead_letter_show_lists_its_attempts(fake_hub: FakeHub) -> None:
    detail = {
        **dead_letter(DELIVERY),
        "replayed_at": None,
        "event": {"attributes": {"id": "evt_1", "type": "com.stripe.charge.failed"}, "data_base64": "e30="},
        "attempt_log": [
            attempt("orders", 1, error="connect timeout", status_code=None, verdict="retry"),
            attempt("orders", 2, status_code=503, verdict="dead"),
        ],
    }
    fake_hub.on("GET", f"/admin/dead-letters/{DELIVERY}", body=detail)
    out = ok(invoke(fake_hub, "dead-letters", "show", DELIVERY)).stdout
    assert "connect timeout" in out and "dead" in out and "evt_1" in out
    assert [line for line in out.splitlines() if "2026-12-05T10:00:02Z" in line and "503" in line]


def test_dead_letters_replay_by_ids_or_subscription(fake_hub: FakeHub) -> None:
    fake_hub.on("POST", "/admin/dead-letters/replay", body={"replayed": 2})
    other = "msg_" + "b" * 26
    assert "replayed 2" in ok(invoke(fake_hub, "dead-letters", "replay", DELIVERY, other)).stdout
    ok(
        invoke(
            fake_hub,
            "dead-letters",
            "replay",
            "--subscription",
            "orders",
            "--type",
            "a.b",
            "--since",
            "1h ago",
        )
    )
    first, second = (r.body for r in fake_hub.requests)
    assert first == {"delivery_ids": [DELIVERY, other]}
    assert set(second) == {"subscription", "type", "since"} and second["type"] == "a.b"
    fake_hub.requests.clear()
    one_error_line(invoke(fake_hub, "dead-letters", "replay"), 2)
    one_error_line(invoke(fake_hub, "dead-letters", "replay", DELIVERY, "--subscription", "orders"), 2)
    one_error_line(invoke(fake_hub, "dead-letters", "replay", "--type", "a.b"), 2)
    assert fake_hub.requests == []


def test_dead_letters_purge_needs_a_yes(fake_hub: FakeHub) -> None:
    fake_hub.on("POST", "/admin/dead-letters/purge", body={"purged": 3})
    result = invoke(fake_hub, "dead-letters", "purge", "-s", "orders", input="n\n")
    assert result.exit_code == 1 and fake_hub.requests == []
    assert "purged 3" in ok(invoke(fake_hub, "dead-letters", "purge", "-s", "orders", "--yes")).stdout
    assert fake_hub.only().body == {"subscription": "orders"}


INGEST = {
    "source": "stripe",
    "id": "evt_9",
    "type": "com.stripe.charge.succeeded",
    "origin": "stripe",
    "correlation_id": "corr-7",
    "received_at": "2026-12-05T09:59:59Z",
    "status": "accepted",
}
ATTEMPTS = [
    attempt("zeta", 1, status_code=200, verdict="delivered", latency_ms=31.0),
    attempt("alpha", 2, status_code=200, verdict="delivered"),
    attempt("alpha", 1, error="HTTP 500"),
]
TRACE = {"events": [{"ingest": INGEST, "attempts": ATTEMPTS}]}


def test_trace_shows_ingest_then_attempts_per_subscription(fake_hub: FakeHub) -> None:
    fake_hub.on("GET", "/admin/events/evt_9", body=TRACE)
    lines = ok(invoke(fake_hub, "trace", "evt_9")).stdout.splitlines()
    ingest = next(i for i, line in enumerate(lines) if "evt_9" in line and "accepted" in line)
    attempts = [line for line in lines if "2026-12-05T10:00:0" in line]
    assert ingest < lines.index(next(line for line in lines if "HTTP 500" in line))
    assert ["alpha" in attempts[0], "alpha" in attempts[1], "zeta" in attempts[2]] == [True] * 3
    assert "HTTP 500" in attempts[0] and "31.0" in attempts[2]


def test_trace_json_and_correlation_id(fake_hub: FakeHub) -> None:
    fake_hub.on("GET", "/admin/events", body=TRACE)
    assert json.loads(ok(invoke(fake_hub, "trace", "--correlation-id", "corr-7", "--json")).stdout) == TRACE
    assert fake_hub.only().query == {"correlation_id": "corr-7"}
    fake_hub.on("GET", "/admin/events", body={"events": []})
    assert "corr-8" in one_error_line(invoke(fake_hub, "trace", "--correlation-id", "corr-8"))
    fake_hub.requests.clear()
    one_error_line(invoke(fake_hub, "trace"), 2)
    one_error_line(invoke(fake_hub, "trace", "evt_9", "--correlation-id", "c"), 2)
    assert fake_hub.requests == []


def test_trace_of_an_unknown_event(fake_hub: FakeHub) -> None:
    fake_hub.on("GET", "/admin/events/evt/1", 404, {"error": "no event with id 'evt/1'"})
    one_error_line(invoke(fake_hub, "trace", "evt/1"))
    assert fake_hub.only().raw_path == "/admin/events/evt%2F1"


def test_status_shows_queues_and_dead_letter_counts(fake_hub: FakeHub) -> None:
    answer = {
        "broker": "sqlite",
        "queues": [
            {
                "name": "hh.sub.orders",
                "role": "subscription",
                "subscription": "orders",
                "depth": 17,
                "consumers": None,
                "in_flight": 3,
            },
            {
                "name": "hh.archive",
                "role": "archive",
                "subscription": None,
                "depth": 0,
                "consumers": 1,
                "in_flight": None,
            },
        ],
        "dead_letters": {"orders": 4},
    }
    fake_hub.on("GET", "/admin/broker", body=answer)
    lines = ok(invoke(fake_hub, "status")).stdout.splitlines()
    assert any("sqlite" in line for line in lines)
    orders = next(line for line in lines if "hh.sub.orders" in line).split()
    assert [cell for cell in orders if cell not in "│┃|"][1:] == ["subscription", "orders", "17", "?", "3"]
    assert any("orders" in line and "4" in line and "hh." not in line for line in lines)
    assert json.loads(ok(invoke(fake_hub, "status", "--json")).stdout) == answer


def test_rejections_and_event_types(fake_hub: FakeHub) -> None:
    fake_hub.on(
        "GET",
        "/admin/rejections",
        body={
            "rejections": [
                {
                    "provider": "github",
                    "at": "2026-12-05T08:00:00Z",
                    "status": 401,
                    "reason": "signature mismatch",
                }
            ]
        },
    )
    fake_hub.on(
        "GET",
        "/admin/event-types",
        body={
            "event_types": [
                {
                    "provider": "github",
                    "type": "com.github.push",
                    "count": 321,
                    "last_seen": "2026-12-05T07:00:00Z",
                }
            ]
        },
    )
    row = next(
        line
        for line in ok(invoke(fake_hub, "rejections", "--provider", "github")).stdout.splitlines()
        if "github" in line
    )
    assert "401" in row and "signature mismatch" in row
    row = next(
        line
        for line in ok(invoke(fake_hub, "event-types", "-p", "github")).stdout.splitlines()
        if "com.github.push" in line
    )
    assert "321" in row and "2026-12-05T07:00:00Z" in row
    assert [(r.path, r.query) for r in fake_hub.requests] == [
        ("/admin/rejections", {"provider": "github"}),
        ("/admin/event-types", {"provider": "github"}),
    ]
