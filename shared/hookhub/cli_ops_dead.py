"""`hookhub dead-letters ...`: deliveries that ran out of attempts, listed, shown, replayed, purged."""

from __future__ import annotations

import shlex
from typing import Annotated, Any

import typer
from rich.markup import escape

from hookhub.cli_ops import (
    TIME_HELP,
    JsonOption,
    TokenOption,
    UrlOption,
    ask,
    fail,
    fields_table,
    note,
    stdout,
    table,
    when,
)
from hookhub.client import DEFAULT_URL, selector

app = typer.Typer(
    help="Deliveries that ran out of attempts (without a subcommand: list them, oldest first).",
    invoke_without_command=True,
)

Subscription = Annotated[str | None, typer.Option("--subscription", "-s", help="Only this subscription's")]
EventType = Annotated[str | None, typer.Option("--type", "-t", help="Only this exact event type")]
Since = Annotated[str | None, typer.Option(help=f"Dead since: {TIME_HELP}")]
Until = Annotated[str | None, typer.Option(help=f"Dead before: {TIME_HELP}")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")]
Ids = Annotated[list[str] | None, typer.Argument(help="Delivery ids (or select with --subscription)")]

_COLUMNS = (
    "delivery id",
    "subscription",
    "type",
    "event id",
    "attempts",
    "last status",
    "last error",
    "dead at",
)


@app.callback()
def dead_letters(
    ctx: typer.Context,
    subscription: Subscription = None,
    type: EventType = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int | None, typer.Option(min=1, max=1000, help="At most this many")] = None,
    cursor: Annotated[str | None, typer.Option(help="Continue after a previous page")] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Dead letters, oldest first, a page at a time."""
    if ctx.invoked_subcommand is not None:
        return
    filters = {
        "subscription": subscription,
        "type": type,
        "since": when(since, "--since"),
        "until": when(until, "--until"),
    }
    answer = ask(
        url, token, as_json, lambda client: client.dead_letters(**filters, limit=limit, cursor=cursor)
    )
    if answer is None:
        return
    letters = answer.get("dead_letters", [])
    rows = [
        (
            d.get("delivery_id"),
            d.get("subscription"),
            d.get("type"),
            d.get("event_id"),
            d.get("attempts"),
            d.get("last_status"),
            d.get("last_error"),
            d.get("dead_at"),
        )
        for d in letters
    ]
    stdout().print(table(_COLUMNS, rows))
    next_cursor = answer.get("next_cursor")
    if next_cursor:
        args = [f"--{key}={value}" for key, value in filters.items() if value is not None]
        args += [f"--limit={limit}"] if limit else []
        note(f"more: hookhub dead-letters {shlex.join([*args, f'--cursor={next_cursor}'])}")
    elif not letters:
        note("no dead letters" + (" match" if any(filters.values()) else ""))


@app.command()
def show(
    delivery_id: str, url: UrlOption = DEFAULT_URL, token: TokenOption = None, as_json: JsonOption = False
) -> None:
    """One dead letter: its event and every attempt made to deliver it."""
    letter = ask(url, token, as_json, lambda client: client.dead_letter(delivery_id))
    if letter is None:
        return
    console = stdout()
    keys = (
        "delivery_id",
        "subscription",
        "source",
        "event_id",
        "type",
        "correlation_id",
        "attempts",
        "last_status",
        "last_error",
        "dead_at",
    )
    console.print(fields_table((key.replace("_", " "), letter.get(key)) for key in keys))
    event: dict[str, Any] = letter.get("event") or {}
    attributes = event.get("attributes") or {}
    if attributes:
        console.print(fields_table(sorted(attributes.items()), title="event attributes"))
    if event.get("data_base64"):
        console.print(f"[dim]data (base64, {len(event['data_base64'])} chars): `--json` prints it[/]")
    attempts = letter.get("attempt_log") or []
    rows = [
        (
            a.get("attempt"),
            a.get("attempted_at"),
            a.get("status_code"),
            a.get("latency_ms"),
            a.get("verdict"),
            a.get("error"),
        )
        for a in attempts
    ]
    console.print(
        table(("attempt", "at", "status", "latency ms", "verdict", "error"), rows, title="attempts")
    )


def _selector(
    ids: list[str] | None, subscription: str | None, type: str | None, since: str | None, until: str | None
) -> dict[str, Any]:
    """Ids, or a subscription with optional filters: never both, never neither (a usage error)."""
    if ids and (subscription or type or since or until):
        fail("give delivery ids or --subscription with filters, not both", 2)
    if not ids and not subscription:
        fail("give delivery ids, or --subscription NAME (optionally --type, --since, --until)", 2)
    return selector(ids or (), subscription, type, when(since, "--since"), when(until, "--until"))


def _describe(body: dict[str, Any]) -> str:
    if "delivery_ids" in body:
        return f"{len(body['delivery_ids'])} given"
    return "of " + ", ".join(f"{key} {value}" for key, value in body.items())


@app.command()
def replay(
    ids: Ids = None,
    subscription: Subscription = None,
    type: EventType = None,
    since: Since = None,
    until: Until = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Deliver dead letters again, through the normal retry path."""
    body = _selector(ids, subscription, type, since, until)
    answer = ask(url, token, as_json, lambda client: client.replay_dead_letters(body))
    if answer is None:
        return
    stdout().print(f"replayed {answer.get('replayed', 0)} dead letters ({escape(_describe(body))})")


@app.command()
def purge(
    ids: Ids = None,
    subscription: Subscription = None,
    type: EventType = None,
    since: Since = None,
    until: Until = None,
    yes: Yes = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete dead letters for good."""
    body = _selector(ids, subscription, type, since, until)
    if not yes and not typer.confirm(f"delete the dead letters {_describe(body)} for good?", err=True):
        fail("nothing purged")
    answer = ask(url, token, as_json, lambda client: client.purge_dead_letters(body))
    if answer is None:
        return
    stdout().print(f"purged {answer.get('purged', 0)} dead letters ({escape(_describe(body))})")
