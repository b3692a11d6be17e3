"""`hookhub subscriptions ...`, `hookhub pause` and `hookhub resume`: subscriptions at runtime.

Here `--url` and `--token` are the subscriber's (as SPEC.md spells `subscriptions create`), so the
hub's URL and admin token are `--hub-url` / `--admin-token` (or HOOKHUB_URL / HOOKHUB_ADMIN_TOKEN).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.text import Text

from hookhub.cli_ops import (
    AdminTokenOption,
    HubUrlOption,
    JsonOption,
    TokenOption,
    UrlOption,
    admin,
    ask,
    fail,
    fields_table,
    note,
    print_json,
    state_cell,
    stdout,
    table,
)
from hookhub.client import DEFAULT_URL

app = typer.Typer(
    help="List, create, change and delete subscriptions (without arguments: list them).",
    invoke_without_command=True,
)

SubscriberUrl = Annotated[str | None, typer.Option("--url", help="Where push deliveries go")]
Types = Annotated[
    list[str] | None, typer.Option("--type", "-t", help="Event type pattern (repeat for several)")
]
Secret = Annotated[
    str | None,
    typer.Option(help="Signing secret whsec_... (create: generated when absent)", show_default=False),
]
MaxAttempts = Annotated[int | None, typer.Option(help="Attempts before a delivery is dead-lettered")]
Timeout = Annotated[str | None, typer.Option(help="Delivery timeout, e.g. 10s")]
MaxInFlight = Annotated[int | None, typer.Option(help="Deliveries in flight at once")]
RateLimit = Annotated[float | None, typer.Option(help="Deliveries per second")]
VisibilityTimeout = Annotated[
    str | None, typer.Option(help="Pull: an unacknowledged event comes back after this, e.g. 30s")
]
PullToken = Annotated[
    str | None, typer.Option("--token", help="Pull: the consumer's bearer token", show_default=False)
]


def _state(sub: dict[str, Any]) -> Text:
    text = state_cell(sub.get("state"))
    if sub.get("state_reason") and sub.get("state") != "active":
        text.append(f" ({sub['state_reason']})", style="dim")
    return text


def _list(url: str, token: str | None, as_json: bool) -> None:
    answer = ask(url, token, as_json, lambda client: client.list_subscriptions())
    if answer is None:
        return
    subs = answer.get("subscriptions", [])
    rows = [
        (
            s.get("name"),
            s.get("origin"),
            s.get("mode"),
            _state(s),
            s.get("depth"),
            s.get("types"),
            s.get("url"),
        )
        for s in subs
    ]
    stdout().print(table(("name", "origin", "mode", "state", "depth", "types", "url"), rows))
    if not subs:
        note("no subscriptions: add one to hookhub.yaml or with `hookhub subscriptions create`")


@app.callback()
def subscriptions(
    ctx: typer.Context,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Subscriptions with their origin, state and queue depth."""
    if ctx.invoked_subcommand is None:
        _list(url, token, as_json)


@app.command("list")
def list_(url: UrlOption = DEFAULT_URL, token: TokenOption = None, as_json: JsonOption = False) -> None:
    """Subscriptions with their origin, state and queue depth."""
    _list(url, token, as_json)


def _seconds(value: Any) -> Any:
    return f"{value:g}s" if isinstance(value, int | float) and not isinstance(value, bool) else value


def _show(sub: dict[str, Any]) -> None:
    backoff = sub.get("backoff") or {}
    pull = sub.get("mode") == "pull"
    pairs = [
        ("name", sub.get("name")),
        ("origin", sub.get("origin")),
        ("mode", sub.get("mode")),
        ("url", sub.get("url")),
        ("types", sub.get("types")),
        ("state", _state(sub)),
        ("failing since", sub.get("failing_since")),
        ("queue", sub.get("queue")),
        ("depth", sub.get("depth")),
        ("max attempts", sub.get("max_attempts")),
        ("max in flight", sub.get("max_in_flight")),
        ("rate limit", f"{sub['rate_limit']:g}/s" if sub.get("rate_limit") else None),
        ("timeout", _seconds(sub.get("timeout"))),
        (
            "backoff",
            ", ".join(f"{k} {_seconds(v) if k in ('initial', 'max') else v}" for k, v in backoff.items()),
        ),
        ("visibility timeout", _seconds(sub.get("visibility_timeout")) if pull else None),
        ("secret rotating until", sub.get("secret_rotating_until")),
        ("created at", sub.get("created_at")),
    ]
    stdout().print(fields_table(pairs))


def _fields(
    url: str | None,
    types: list[str] | None,
    secret: str | None,
    max_attempts: int | None,
    timeout: str | None,
    max_in_flight: int | None,
    rate_limit: float | None,
    visibility_timeout: str | None,
    token: str | None,
) -> dict[str, Any]:
    given = {
        "url": url,
        "types": types or None,
        "secret": secret,
        "max_attempts": max_attempts,
        "timeout": timeout,
        "max_in_flight": max_in_flight,
        "rate_limit": rate_limit,
        "visibility_timeout": visibility_timeout,
        "token": token,
    }
    return {key: value for key, value in given.items() if value is not None}


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="The subscription's name")],
    url: SubscriberUrl = None,
    types: Types = None,
    secret: Secret = None,
    max_attempts: MaxAttempts = None,
    timeout: Timeout = None,
    max_in_flight: MaxInFlight = None,
    rate_limit: RateLimit = None,
    mode: Annotated[str, typer.Option(help="push (the hub POSTs) or pull (the consumer fetches)")] = "push",
    token: PullToken = None,
    visibility_timeout: VisibilityTimeout = None,
    hub_url: HubUrlOption = DEFAULT_URL,
    admin_token: AdminTokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a subscription, delivered to without a restart; prints its signing secret once.

    --url and --token are the subscriber's here: the hub's are --hub-url and --admin-token.
    """
    if not types:
        fail("give at least one --type (e.g. --type 'com.stripe.#')", 2)
    if mode not in ("push", "pull"):
        fail(f"--mode must be push or pull, not {mode!r}", 2)
    fields = _fields(
        url, types, secret, max_attempts, timeout, max_in_flight, rate_limit, visibility_timeout, token
    )
    fields["mode"] = mode
    answer = ask(hub_url, admin_token, as_json, lambda client: client.create_subscription(name, fields))
    if answer is None:
        return
    console = stdout()
    console.print(f"created subscription [bold]{escape(name)}[/] ({escape(mode)})")
    if answer.get("secret"):
        console.print(f"signing secret: {escape(str(answer['secret']))}", soft_wrap=True)
        note("the secret is shown only now: give it to the subscriber to verify signatures")


@app.command()
def show(
    name: str, url: UrlOption = DEFAULT_URL, token: TokenOption = None, as_json: JsonOption = False
) -> None:
    """One subscription's settings, state and queue."""
    with admin(url, token) as client:
        sub = client.get_subscription(name)
    if as_json:
        print_json(sub)
    else:
        _show(sub)


@app.command()
def update(
    name: str,
    url: SubscriberUrl = None,
    types: Types = None,
    secret: Secret = None,
    max_attempts: MaxAttempts = None,
    timeout: Timeout = None,
    max_in_flight: MaxInFlight = None,
    rate_limit: RateLimit = None,
    token: PullToken = None,
    visibility_timeout: VisibilityTimeout = None,
    hub_url: HubUrlOption = DEFAULT_URL,
    admin_token: AdminTokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change a subscription made through the API (--type replaces all its types).

    --url and --token are the subscriber's here: the hub's are --hub-url and --admin-token.
    """
    changes = _fields(
        url, types, secret, max_attempts, timeout, max_in_flight, rate_limit, visibility_timeout, token
    )
    if not changes:
        fail("nothing to change: give at least one option, e.g. --url or --type", 2)
    sub = ask(hub_url, admin_token, as_json, lambda client: client.update_subscription(name, changes))
    if sub is None:
        return
    stdout().print(f"updated subscription [bold]{escape(name)}[/]: {escape(', '.join(sorted(changes)))}")


@app.command()
def delete(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Delete a subscription made through the API, with its queue and the events it retains."""
    if not yes and not typer.confirm(
        f"delete subscription {name!r}, its queue and the events waiting in it?", err=True
    ):
        fail("not deleted")
    with admin(url, token) as client:
        client.delete_subscription(name)
    stdout().print(f"deleted subscription [bold]{escape(name)}[/]")


@app.command("rotate-secret")
def rotate_secret(
    name: str,
    secret: Annotated[
        str | None, typer.Option(help="The new whsec_... (generated when absent)", show_default=False)
    ] = None,
    overlap: Annotated[
        str | None, typer.Option(help="How long the old secret still signs too, e.g. 24h (the hub's default)")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Give a subscription a new signing secret; both sign deliveries during the overlap."""
    answer = ask(url, token, as_json, lambda client: client.rotate_secret(name, secret, overlap))
    if answer is None:
        return
    stdout().print(f"new signing secret: {escape(str(answer.get('secret')))}", soft_wrap=True)
    note(f"the previous secret also signs until {answer.get('previous_expires_at')}; shown only now")


def pause(
    name: str,
    reason: Annotated[str | None, typer.Option(help="Why, shown in `hookhub subscriptions`")] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Stop delivering to a subscription; its events are kept until `hookhub resume`."""
    sub = ask(url, token, as_json, lambda client: client.pause(name, reason))
    if sub is None:
        return
    stdout().print(f"paused [bold]{escape(name)}[/]: {sub.get('depth', '?')} events waiting")


def resume(
    name: str, url: UrlOption = DEFAULT_URL, token: TokenOption = None, as_json: JsonOption = False
) -> None:
    """Deliver to a paused or disabled subscription again, starting with what it retained."""
    sub = ask(url, token, as_json, lambda client: client.resume(name))
    if sub is None:
        return
    stdout().print(f"resumed [bold]{escape(name)}[/]: state {escape(str(sub.get('state')))}")
