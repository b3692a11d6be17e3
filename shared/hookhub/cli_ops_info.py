"""`hookhub trace`, `status`, `rejections`, `event-types`: what the hub saw and holds."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from hookhub.cli_ops import (
    JsonOption,
    TokenOption,
    UrlOption,
    admin,
    ask,
    fail,
    note,
    print_json,
    stdout,
    table,
)
from hookhub.client import DEFAULT_URL

Provider = Annotated[
    str | None, typer.Option("--provider", "-p", help="Only this provider's (or producer's)")
]


def _trace_tables(trace: dict[str, Any]) -> None:
    console = stdout()
    ingest = trace.get("ingest") or {}
    keys = ("origin", "source", "id", "type", "correlation_id", "received_at", "status")
    console.print(
        table(
            ("provider", "source", "id", "type", "correlation id", "received at", "status"),
            [[ingest.get(key) for key in keys]],
            title="ingest",
        )
    )
    attempts = sorted(
        trace.get("attempts") or [],
        key=lambda a: (str(a.get("subscription")), a.get("attempt") or 0, str(a.get("attempted_at"))),
    )
    rows = [
        (
            a.get("subscription"),
            a.get("attempt"),
            a.get("attempted_at"),
            a.get("status_code"),
            a.get("latency_ms"),
            a.get("verdict"),
            a.get("error"),
            a.get("next_attempt_at"),
        )
        for a in attempts
    ]
    columns = ("subscription", "attempt", "at", "status", "latency ms", "verdict", "error", "next attempt")
    console.print(table(columns, rows, title="attempts"))
    if not attempts:
        note("no delivery attempts (yet): no subscription matched, or its deliveries are still queued")


def trace(
    event_id: Annotated[str | None, typer.Argument(help="The event id (as the provider sent it)")] = None,
    correlation_id: Annotated[str | None, typer.Option(help="Every event with this correlation id")] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """An event's ingest record and every attempt to deliver it, to every subscription."""
    if (event_id is None) == (correlation_id is None):
        fail("give an event id or --correlation-id (one of them)", 2)
    with admin(url, token) as client:
        if event_id is not None:
            answer = client.trace(event_id)
        else:
            answer = client.trace_correlation(str(correlation_id))
    if as_json:
        print_json(answer)
        return
    events = answer.get("events") or []
    if not events:
        fail(f"no event with correlation id {correlation_id}" if correlation_id else "no such event")
    for trace_ in events:
        _trace_tables(trace_)


def _count(value: Any) -> Any:
    return "?" if value is None else value


def status(url: UrlOption = DEFAULT_URL, token: TokenOption = None, as_json: JsonOption = False) -> None:
    """The broker's queues (depth, consumers, in flight) and dead-letter counts."""
    answer = ask(url, token, as_json, lambda client: client.broker())
    if answer is None:
        return
    console = stdout()
    console.print(f"broker: [bold]{escape(str(answer.get('broker')))}[/]")
    rows = [
        (
            q.get("name"),
            q.get("role"),
            q.get("subscription"),
            q.get("depth"),
            _count(q.get("consumers")),
            _count(q.get("in_flight")),
        )
        for q in answer.get("queues") or []
    ]
    console.print(
        table(("queue", "role", "subscription", "depth", "consumers", "in flight"), rows, title="queues")
    )
    dead = answer.get("dead_letters") or {}
    console.print(table(("subscription", "dead letters"), sorted(dead.items()), title="dead letters"))
    if not dead:
        note("no dead letters")


def rejections(
    provider: Provider = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many")] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Inbound requests the hub refused, newest first, with the reason (never a secret)."""
    answer = ask(url, token, as_json, lambda client: client.rejections(provider, limit))
    if answer is None:
        return
    items = answer.get("rejections") or []
    rows = [(r.get("at"), r.get("provider"), r.get("status"), r.get("reason")) for r in items]
    stdout().print(table(("at", "provider", "status", "reason"), rows))
    if not items:
        note("no rejected requests")


def event_types(
    provider: Provider = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Event types seen, per provider, with counts and when last seen."""
    answer = ask(url, token, as_json, lambda client: client.event_types(provider))
    if answer is None:
        return
    items = answer.get("event_types") or []
    rows = [(t.get("provider"), t.get("type"), t.get("count"), t.get("last_seen")) for t in items]
    stdout().print(table(("provider", "type", "count", "last seen"), rows))
    if not items:
        note("no events seen yet")
