"""The `hookhub` operator commands against a real hub served on a port (SQLite broker), with
a real subscriber: what an operator types, and what the hub then does."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from hookhub.cli import app as cli_app
from hookhub.config import parse_config
from hookhub.web import create_app
from tests.http.conftest import PRODUCER_TOKEN, LiveServer, serve_in_thread
from tests.ops._live import ADMIN_TOKEN, FAST_RETRY, hub_config, push
from tests.support.subscriber import Subscriber

WAIT = 20.0


@pytest.fixture
def server(tmp_path: Path, namespace: str, subscriber: Subscriber) -> Iterator[LiveServer]:
    """`hookhub run`'s shape: the whole hub, delivering and archiving, on a port of its own."""
    subscriber.status(500, path="/bad")
    config = hub_config(
        f"sqlite:///{tmp_path}/broker.db",
        str(tmp_path),
        namespace,
        filed=push(subscriber.url("/filed"), "com.acme.#"),
        bad=push(subscriber.url("/bad"), "com.acme.invoice.*", **FAST_RETRY),
    )
    app = create_app(parse_config(config, environ={}))
    with serve_in_thread(app, lifespan="on") as live:
        yield live


def hookhub(server: LiveServer, *args: str, env: dict[str, str | None] | None = None) -> Result:
    """`hookhub ARGS` in-process, to `server` by HOOKHUB_URL with the admin token from the
    environment, on a wide terminal."""
    base: dict[str, str | None] = {
        "COLUMNS": "250",
        "HOOKHUB_URL": server.url(""),
        "HOOKHUB_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    return CliRunner().invoke(cli_app, list(args), env={**base, **(env or {})})


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr, result.exception)
    return result


def as_json(result: Result) -> dict[str, Any]:
    return dict(json.loads(ok(result).stdout))


def produce(server: LiveServer, n: int = 1, correlation_id: str | None = None) -> list[str]:
    ids = [uuid.uuid4().hex for _ in range(n)]
    batch = [
        {"specversion": "1.0", "id": i, "source": "/billing", "type": "com.acme.invoice.paid", "data": {}}
        | ({"correlationid": correlation_id} if correlation_id else {})
        for i in ids
    ]
    response = httpx.post(
        server.url("/events"),
        json=batch,
        headers={
            "Authorization": f"Bearer {PRODUCER_TOKEN}",
            "Content-Type": "application/cloudevents-batch+json",
        },
    )
    assert response.status_code == 202, response.text
    return ids


def eventually(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"waited {timeout}s for {what}"
        time.sleep(0.1)


def test_subscriptions_listed_created_paused_resumed_and_deleted(
    server: LiveServer, subscriber: Subscriber
) -> None:
    listing = ok(hookhub(server, "subscriptions")).stdout
    assert "filed" in listing and "bad" in listing and "file" in listing
    # the hub's URL and token as options instead of the environment
    options = ["--url", server.url(""), "--token", ADMIN_TOKEN]
    listed = as_json(hookhub(server, "subscriptions", "list", "--json", *options, env={"HOOKHUB_URL": None}))
    assert {s["name"] for s in listed["subscriptions"]} == {"filed", "bad"}
    wrong = hookhub(server, "subscriptions", "--token", "wrong")
    assert wrong.exit_code == 1 and "wrong admin token" in wrong.stderr

    created = ok(
        hookhub(
            server,
            "subscriptions",
            "create",
            "crm",
            "--url",
            subscriber.url("/crm"),
            "--type",
            "com.acme.#",
            "--max-attempts",
            "3",
            "--hub-url",
            server.url(""),
        )
    )
    assert "created subscription crm" in created.stdout and "whsec_" in created.stdout
    shown = as_json(hookhub(server, "subscriptions", "show", "crm", "--json"))
    assert (shown["origin"], shown["state"], shown["max_attempts"]) == ("api", "active", 3)
    (first,) = produce(server)
    assert subscriber.wait_for(1, WAIT, path="/crm")[0].ce_id == first

    paused = ok(hookhub(server, "pause", "crm", "--reason", "deploy"))
    assert "paused crm" in paused.stdout
    held = set(produce(server, 2))
    eventually(
        lambda: as_json(hookhub(server, "subscriptions", "show", "crm", "--json"))["depth"] == 2, "depth 2"
    )
    assert "paused (deploy)" in ok(hookhub(server, "subscriptions")).stdout
    assert len(subscriber.requests("/crm")) == 1
    assert "state active" in ok(hookhub(server, "resume", "crm")).stdout
    subscriber.wait_for(3, WAIT, path="/crm")
    assert {r.ce_id for r in subscriber.requests("/crm")[1:]} == held

    assert "deleted subscription crm" in ok(hookhub(server, "subscriptions", "delete", "crm", "--yes")).stdout
    listed = as_json(hookhub(server, "subscriptions", "--json"))
    assert "crm" not in {s["name"] for s in listed["subscriptions"]}
    gone = hookhub(server, "subscriptions", "show", "crm")
    assert gone.exit_code == 1 and "crm" in gone.stderr
    refused = hookhub(server, "subscriptions", "delete", "filed", "--yes")
    assert refused.exit_code == 1 and "hookhub.yaml" in refused.stderr


def test_dead_letters_listed_shown_and_replayed(server: LiveServer, subscriber: Subscriber) -> None:
    (event_id,) = produce(server)

    def dead() -> list[dict[str, Any]]:
        return list(
            as_json(hookhub(server, "dead-letters", "--subscription", "bad", "--json"))["dead_letters"]
        )

    (letter,) = eventually(dead, "a dead letter of `bad`")
    assert letter["event_id"] == event_id and letter["attempts"] == 2
    table = ok(hookhub(server, "dead-letters", "-s", "bad", "--since=-1h")).stdout
    assert letter["delivery_id"] in table and "500" in table
    later = ok(hookhub(server, "dead-letters", "--since", str(time.time() + 3600)))
    assert "no dead letters match" in later.stderr and letter["delivery_id"] not in later.stdout
    shown = ok(hookhub(server, "dead-letters", "show", letter["delivery_id"])).stdout
    assert event_id in shown and "com.acme.invoice.paid" in shown
    detail = as_json(hookhub(server, "dead-letters", "show", letter["delivery_id"], "--json"))
    assert [a["verdict"] for a in detail["attempt_log"]] == ["retry", "dead"]

    subscriber.ok(path="/bad")
    replayed = ok(hookhub(server, "dead-letters", "replay", "--subscription", "bad"))
    assert "replayed 1 dead letters" in replayed.stdout
    got = subscriber.wait_for(3, WAIT, path="/bad")
    assert got[-1].ce_id == event_id
    eventually(lambda: not dead(), "no dead letters left")
    again = ok(hookhub(server, "dead-letters", "replay", letter["delivery_id"]))
    assert "replayed 0 dead letters" in again.stdout


def test_replay_dry_run_then_a_real_replay(server: LiveServer, subscriber: Subscriber) -> None:
    start = time.time() - 5
    ids = produce(server, 3)
    end = str(time.time() + 5)
    subscriber.wait_for(3, WAIT, path="/filed")
    interval = ("--from", str(start), "--to", end)

    def counted() -> bool:
        return bool(
            as_json(hookhub(server, "replay", "filed", *interval, "--dry-run", "--json"))["count"] == 3
        )

    eventually(counted, "three archived events")
    dry = ok(hookhub(server, "replay", "filed", *interval, "--dry-run")).stdout
    assert "3 archived events" in dry and "would be resent to filed" in dry
    assert all(i in dry for i in ids)
    assert len(subscriber.requests("/filed")) == 3

    done = ok(hookhub(server, "replay", "filed", *interval, "--interval", "0.1"))
    assert "done" in done.stdout and "sent 3" in done.stdout
    subscriber.wait_for(6, WAIT, path="/filed")
    resent = [r for r in subscriber.requests("/filed") if r.headers.get("hookhub-replay")]
    assert sorted(r.ce_id or "" for r in resent) == sorted(ids)
    jobs = as_json(hookhub(server, "replays", "--json"))["replays"]
    assert [(j["state"], j["sent"]) for j in jobs] == [("done", 3)]
    assert resent[0].headers["hookhub-replay"] == jobs[0]["id"]
    assert jobs[0]["id"] in ok(hookhub(server, "replays")).stdout


def test_trace_and_status(server: LiveServer, subscriber: Subscriber) -> None:
    correlation = f"corr-{uuid.uuid4().hex[:8]}"
    (event_id,) = produce(server, correlation_id=correlation)
    subscriber.wait_for(1, WAIT, path="/filed")

    def traced() -> dict[str, Any] | None:
        (trace,) = as_json(hookhub(server, "trace", event_id, "--json"))["events"]
        return (
            trace if {a["subscription"] for a in trace["attempts"] if a["verdict"] == "delivered"} else None
        )

    trace = eventually(traced, "a delivered attempt")
    assert trace["ingest"]["origin"] == "billing" and trace["ingest"]["correlation_id"] == correlation
    out = ok(hookhub(server, "trace", event_id)).stdout
    assert event_id in out and "billing" in out and "delivered" in out and "filed" in out
    by_correlation = as_json(hookhub(server, "trace", "--correlation-id", correlation, "--json"))
    assert [t["ingest"]["id"] for t in by_correlation["events"]] == [event_id]
    missing = hookhub(server, "trace", "no-such-event")
    assert missing.exit_code == 1 and "no-such-event" in missing.stderr
    assert hookhub(server, "trace").exit_code == 2

    status = ok(hookhub(server, "status")).stdout
    assert "sqlite" in status and ".sub.filed" in status and ".sub.bad" in status
    answer = as_json(hookhub(server, "status", "--json"))
    assert answer["broker"] == "sqlite"
    assert {q["subscription"] for q in answer["queues"] if q["role"] == "subscription"} == {"filed", "bad"}
