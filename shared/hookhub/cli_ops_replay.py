"""`hookhub replay NAME --from --to` and `hookhub replays`: resend an archived interval to one
subscription as a job on the hub, followed here with a progress bar.

The job runs on the hub, not in this process: leaving with `--no-wait` (or losing the connection)
leaves it running; Ctrl-C while following cancels it, since that is what an operator means by it.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from hookhub.cli_ops import (
    TIME_HELP,
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
    stderr,
    stdout,
    table,
    when,
)
from hookhub.client import DEFAULT_URL, AdminClient, AdminError

FINAL_STATES = frozenset({"done", "cancelled", "failed"})
INTERRUPTED = 130  # the shell's code for a command ended by Ctrl-C

app = typer.Typer(
    help="Interval resend jobs (without a subcommand: list them, newest first).", invoke_without_command=True
)


def _job_rows(jobs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (
            j.get("id"),
            j.get("subscription"),
            j.get("from"),
            j.get("to"),
            state_cell(j.get("state")),
            j.get("scanned"),
            j.get("sent"),
            j.get("created_at"),
            j.get("finished_at"),
            j.get("error"),
        )
        for j in jobs
    ]


_JOB_COLUMNS = (
    "id",
    "subscription",
    "from",
    "to",
    "state",
    "scanned",
    "sent",
    "created",
    "finished",
    "error",
)


def _dry_run(answer: dict[str, Any], name: str) -> None:
    console = stdout()
    console.print(
        f"{answer.get('count', 0)} archived events from {escape(str(answer.get('from')))} to "
        f"{escape(str(answer.get('to')))} would be resent to [bold]{escape(name)}[/]",
        soft_wrap=True,
    )
    if answer.get("count"):
        console.print(
            f"first at {escape(str(answer.get('first')))}, last at {escape(str(answer.get('last')))}"
        )
    sample = answer.get("sample") or []
    if sample:
        rows = [(s.get("time"), s.get("type"), s.get("source"), s.get("id")) for s in sample]
        console.print(table(("time", "type", "source", "id"), rows, title="sample"))


def _counts(job: dict[str, Any]) -> str:
    return f"scanned {job.get('scanned', 0)} archived events, sent {job.get('sent', 0)}"


def follow(client: AdminClient, job: dict[str, Any], interval: float) -> dict[str, Any]:
    """Poll the job until it ends, with a progress display; Ctrl-C cancels it on the hub."""
    job_id = str(job["id"])
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=stderr(), transient=True) as progress:
            task = progress.add_task(
                f"replay {job_id[:8]} {job.get('state')}", total=None, counts=_counts(job)
            )
            while job.get("state") not in FINAL_STATES:
                time.sleep(interval)
                job = client.replay(job_id)
                progress.update(
                    task, description=f"replay {job_id[:8]} {job.get('state')}", counts=_counts(job)
                )
    except KeyboardInterrupt:
        try:
            job = client.cancel_replay(job_id)
        except AdminError as exc:
            fail(f"interrupted; cancelling replay job {job_id} failed too: {exc.message}", INTERRUPTED)
        stderr().print(
            f"[yellow]cancelled[/] replay job {escape(job_id)} after it {_counts(job)}", soft_wrap=True
        )
        raise typer.Exit(INTERRUPTED) from None
    except AdminError as exc:
        fail(f"{exc.message} (the job continues on the hub: `hookhub replays show {job_id}`)")
    return job


def replay(
    name: Annotated[str, typer.Argument(help="The subscription to resend to")],
    start: Annotated[str, typer.Option("--from", help=f"Interval start (event time): {TIME_HELP}")],
    end: Annotated[str, typer.Option("--to", help=f"Interval end, excluded: {TIME_HELP}")] = "now",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count and sample, send nothing")] = False,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Start the job and return")] = False,
    interval: Annotated[float, typer.Option(hidden=True, min=0.01)] = 0.5,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Resend the archived events of an interval that match a subscription's types."""
    start_at, end_at = when(start, "--from"), when(end, "--to")
    assert start_at is not None and end_at is not None
    with admin(url, token) as client:
        answer = client.create_replay(name, start_at, end_at, dry_run=dry_run)
        if dry_run:
            print_json(answer) if as_json else _dry_run(answer, name)
            return
        if no_wait:
            if as_json:
                print_json(answer)
            else:
                stdout().print(f"started replay job {escape(str(answer.get('id')))}")
                note(f"follow it with `hookhub replays show {answer.get('id')}`")
            return
        note(f"replay job {answer.get('id')}: {start_at} to {end_at} to {name} (Ctrl-C cancels it)")
        job = follow(client, answer, interval)
    if as_json:
        print_json(job)
    _ended(job, quiet=as_json)


def _ended(job: dict[str, Any], quiet: bool = False) -> None:
    """Report how a job ended: exit 0 only when it is done."""
    state, job_id = job.get("state"), str(job.get("id"))
    if state == "done":
        if not quiet:
            stdout().print(f"[green]done[/]: replay job {escape(job_id)} {_counts(job)}", soft_wrap=True)
        return
    if state == "cancelled":
        fail(f"replay job {job_id} was cancelled after it {_counts(job)}")
    fail(f"replay job {job_id} failed after it {_counts(job)}: {job.get('error') or 'no reason given'}")


@app.callback()
def replays(
    ctx: typer.Context,
    subscription: Annotated[str | None, typer.Option("--subscription", "-s", help="Only this one's")] = None,
    limit: Annotated[int | None, typer.Option(min=1, max=500, help="At most this many")] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Interval resend jobs, newest first."""
    if ctx.invoked_subcommand is not None:
        return
    answer = ask(url, token, as_json, lambda client: client.replays(subscription, limit))
    if answer is None:
        return
    jobs = answer.get("replays", [])
    stdout().print(table(_JOB_COLUMNS, _job_rows(jobs)))
    if not jobs:
        note("no replay jobs: start one with `hookhub replay NAME --from ... --to ...`")


@app.command()
def show(
    job_id: str, url: UrlOption = DEFAULT_URL, token: TokenOption = None, as_json: JsonOption = False
) -> None:
    """One job's state and progress."""
    job = ask(url, token, as_json, lambda client: client.replay(job_id))
    if job is None:
        return
    keys = (
        "id",
        "subscription",
        "from",
        "to",
        "state",
        "scanned",
        "sent",
        "error",
        "created_at",
        "updated_at",
        "finished_at",
    )
    stdout().print(fields_table((key.replace("_", " "), job.get(key)) for key in keys))


@app.command()
def cancel(
    job_id: str, url: UrlOption = DEFAULT_URL, token: TokenOption = None, as_json: JsonOption = False
) -> None:
    """Stop a queued or running job (what it sent stays sent)."""
    job = ask(url, token, as_json, lambda client: client.cancel_replay(job_id))
    if job is None:
        return
    stdout().print(f"replay job {escape(job_id)}: {escape(str(job.get('state')))} after it {_counts(job)}")
