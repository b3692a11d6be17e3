"""The operator commands (`hookhub subscriptions`, `dead-letters`, `replay`, `trace`, `status`, ...):
clients of the admin API, so they work the same against a local hub and one on Knative.

This module holds what they share: the hub options, time parsing, error reporting and output.
An error is one red line on stderr and exit code 1 (2 for a usage error), never a traceback.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from hookhub.client import DEFAULT_URL, AdminClient, AdminError

_URL_HELP = "The hub's base URL"
_TOKEN_HELP = "The hub's admin token"
UrlOption = Annotated[
    str, typer.Option("--url", "--hub-url", envvar="HOOKHUB_URL", help=_URL_HELP, show_envvar=True)
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token", "--admin-token", envvar="HOOKHUB_ADMIN_TOKEN", help=_TOKEN_HELP, show_default=False
    ),
]
# `subscriptions create/update` use --url and --token for the subscriber, so there the hub's are:
HubUrlOption = Annotated[str, typer.Option("--hub-url", envvar="HOOKHUB_URL", help=_URL_HELP)]
AdminTokenOption = Annotated[
    str | None,
    typer.Option("--admin-token", envvar="HOOKHUB_ADMIN_TOKEN", help=_TOKEN_HELP, show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON answer instead of tables")]


def stdout() -> Console:
    """A console made per command, so it follows the terminal (and COLUMNS) of this run."""
    return Console(highlight=False)


def stderr() -> Console:
    return Console(stderr=True, highlight=False)


def fail(message: str, code: int = 1) -> NoReturn:
    stderr().print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def note(message: str) -> None:
    """A hint for the operator, on stderr so stdout stays the command's answer."""
    stderr().print(f"[dim]{escape(message)}[/]", soft_wrap=True)


@contextmanager
def admin(url: str, token: str | None) -> Iterator[AdminClient]:
    """A client for one command; its errors end the command with their message."""
    try:
        with AdminClient(url or DEFAULT_URL, token) as client:
            yield client
    except AdminError as exc:
        fail(exc.message)


T = TypeVar("T")


def ask(url: str, token: str | None, as_json: bool, call: Callable[[AdminClient], T]) -> T | None:
    """One admin API call for a command. With `--json` its answer is printed as it came and
    None returned: the command has nothing more to show."""
    with admin(url, token) as client:
        answer = call(client)
    if as_json:
        print_json(answer)
        return None
    return answer


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def cell(value: Any) -> Text:
    """A table cell shown literally (a type or URL from the hub is never rich markup)."""
    if value is None:
        return Text("-", style="dim")
    if isinstance(value, list | tuple):
        return Text(", ".join(str(item) for item in value))
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    return Text(str(value))


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> Table:
    result = Table(*columns, title=title, title_justify="left", header_style="bold")
    for row in rows:
        result.add_row(*(value if isinstance(value, Text) else cell(value) for value in row))
    return result


def fields_table(pairs: Iterable[tuple[str, Any]], title: str | None = None) -> Table:
    """One record as a two-column table (for `show` commands)."""
    result = Table(show_header=False, title=title, title_justify="left", box=None, padding=(0, 2, 0, 0))
    result.add_column(style="bold")
    result.add_column()
    for key, value in pairs:
        result.add_row(key, value if isinstance(value, Text) else cell(value))
    return result


_STATE_STYLES = {
    "active": "green",
    "done": "green",
    "paused": "yellow",
    "queued": "cyan",
    "running": "cyan",
    "disabled": "red",
    "failed": "red",
    "cancelled": "yellow",
}


def state_cell(state: Any) -> Text:
    return Text(str(state), style=_STATE_STYLES.get(str(state), ""))


# Times. The API takes RFC 3339; operators also type `-2h`, `30m ago`, `now` or unix seconds.
_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "mins": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hrs": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
    "w": 604800.0,
    "week": 604800.0,
    "weeks": 604800.0,
}
_AMOUNT = r"(\d+(?:\.\d+)?)\s*([a-z]+)"
_AGO = re.compile(rf"^-\s*{_AMOUNT}$|^{_AMOUNT}\s+ago$")
_UNIX = re.compile(r"^\d+(?:\.\d+)?$")
TIME_HELP = "RFC 3339 (2026-12-05T10:00:00Z), unix seconds, `now`, or relative: -2h, 30m ago, -7d"


def rfc3339(moment: datetime) -> str:
    """UTC with `Z`, to the second unless the moment has a fraction."""
    moment = moment.astimezone(UTC)
    timespec = "seconds" if moment.microsecond == 0 else "microseconds"
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_when(value: str, now: datetime | None = None) -> str:
    """An operator's time as RFC 3339 (a time without an offset is UTC); ValueError if unreadable."""
    text = value.strip().lower()
    now = now if now is not None else datetime.now(UTC).replace(microsecond=0)  # relative times are coarse
    try:
        if text == "now":
            return rfc3339(now)
        relative = _AGO.match(text)
        if relative:
            amount, unit = relative.group(1, 2) if relative.group(1) else relative.group(3, 4)
            if unit not in _UNITS:
                raise ValueError(f"unknown unit {unit!r}: use s, m, h, d or w")
            return rfc3339(now - timedelta(seconds=float(amount) * _UNITS[unit]))
        if _UNIX.match(text):
            return rfc3339(datetime.fromtimestamp(float(text), UTC))
        moment = datetime.fromisoformat(text.upper())
    except (OverflowError, OSError):
        raise ValueError(f"{value!r} is out of range") from None
    except ValueError as exc:
        if "unknown unit" in str(exc):
            raise
        raise ValueError(f"cannot read {value!r} as a time: use {TIME_HELP}") from None
    return rfc3339(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def when(value: str | None, option: str) -> str | None:
    """`parse_when` for a command's option, a usage error (exit 2) when unreadable."""
    if value is None:
        return None
    try:
        return parse_when(value)
    except ValueError as exc:
        fail(f"invalid {option}: {exc}", 2)


def register(app: typer.Typer) -> None:
    """Add the operator commands to the `hookhub` app."""
    from hookhub import cli_ops_dead, cli_ops_info, cli_ops_replay, cli_ops_subs

    app.add_typer(cli_ops_subs.app, name="subscriptions")
    app.command("pause")(cli_ops_subs.pause)
    app.command("resume")(cli_ops_subs.resume)
    app.add_typer(cli_ops_dead.app, name="dead-letters")
    app.command("replay")(cli_ops_replay.replay)
    app.add_typer(cli_ops_replay.app, name="replays")
    app.command("trace")(cli_ops_info.trace)
    app.command("status")(cli_ops_info.status)
    app.command("rejections")(cli_ops_info.rejections)
    app.command("event-types")(cli_ops_info.event_types)
