"""`hookhub replay` and `hookhub replays` against a fake admin API: the dry run, a job followed to its
end (done, cancelled, failed), `--no-wait`, and Ctrl-C cancelling the job on the hub."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.test_cli_ops_fake import ADMIN_TOKEN, FakeHub, Seen, fresh_hub, invoke, ok, one_error_line

JOB_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def fake_hub() -> FakeHub:
    return fresh_hub()


def job(state: str, scanned: int = 0, sent: int = 0, error: str | None = None) -> dict[str, Any]:
    return {
        "id": JOB_ID,
        "subscription": "orders",
        "from": "2026-12-05T00:00:00Z",
        "to": "2026-12-05T12:00:00Z",
        "state": state,
        "scanned": scanned,
        "sent": sent,
        "error": error,
        "created_at": "2026-12-05T12:00:01Z",
        "updated_at": "2026-12-05T12:00:02Z",
        "finished_at": None,
    }


def parsed(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_replay_dry_run_shows_count_range_and_sample(fake_hub: FakeHub) -> None:
    answer = {
        "count": 1234,
        "sample": [
            {
                "id": "evt_s1",
                "source": "stripe",
                "type": "com.stripe.charge.succeeded",
                "time": "2026-12-05T01:02:03Z",
            }
        ],
        "first": "2026-12-05T00:00:04Z",
        "last": "2026-12-05T11:59:58Z",
        "from": "2026-12-05T00:00:00Z",
        "to": "2026-12-05T12:00:00Z",
    }
    fake_hub.on("POST", "/admin/replays", body=answer)
    result = ok(
        invoke(
            fake_hub,
            "replay",
            "orders",
            "--from",
            "2026-12-05T00:00:00Z",
            "--to",
            "2026-12-05T12:00:00Z",
            "--dry-run",
        )
    )
    assert fake_hub.only().body == {
        "subscription": "orders",
        "from": "2026-12-05T00:00:00Z",
        "to": "2026-12-05T12:00:00Z",
        "dry_run": True,
    }
    out = result.stdout
    assert "1234 archived events" in out and "2026-12-05T00:00:04Z" in out and "2026-12-05T11:59:58Z" in out
    assert "evt_s1" in out and "com.stripe.charge.succeeded" in out


def scripted(states: list[dict[str, Any]]) -> Any:
    """A GET handler answering each poll with the next state, then the last one forever."""

    def handler(_seen: Seen) -> tuple[int, Any]:
        return 200, states.pop(0) if len(states) > 1 else states[0]

    return handler


def test_replay_follows_the_job_until_done(fake_hub: FakeHub) -> None:
    fake_hub.on("POST", "/admin/replays", 202, job("queued"))
    fake_hub.handle(
        "GET",
        f"/admin/replays/{JOB_ID}",
        scripted([job("running", 5, 3), job("running", 9, 6), job("done", 10, 7)]),
    )
    result = ok(invoke(fake_hub, "replay", "orders", "--from", "-12h", "--interval", "0.01"))
    polls = [r for r in fake_hub.requests if r.method == "GET"]
    assert len(polls) == 3
    body = fake_hub.requests[0].body
    assert abs(parsed(body["to"]) - datetime.now(UTC)) < timedelta(seconds=10)  # --to defaults to now
    assert parsed(body["to"]) - parsed(body["from"]) - timedelta(hours=12) < timedelta(seconds=1)
    assert "done" in result.stdout and "scanned 10 archived events, sent 7" in result.stdout


def test_replay_that_gets_cancelled_or_fails_exits_1(fake_hub: FakeHub) -> None:
    fake_hub.on("POST", "/admin/replays", 202, job("queued"))
    fake_hub.handle("GET", f"/admin/replays/{JOB_ID}", scripted([job("running", 2), job("cancelled", 4, 1)]))
    line = one_error_line(invoke(fake_hub, "replay", "orders", "--from", "-1h", "--interval", "0.01"))
    assert "cancelled" in line and "scanned 4 archived events, sent 1" in line
    fake_hub.on("GET", f"/admin/replays/{JOB_ID}", body=job("failed", 3, 0, error="archive unreadable"))
    line = one_error_line(invoke(fake_hub, "replay", "orders", "--from", "-1h", "--interval", "0.01"))
    assert "failed" in line and "archive unreadable" in line


def test_replay_no_wait_only_starts_the_job(fake_hub: FakeHub) -> None:
    fake_hub.on("POST", "/admin/replays", 202, job("queued"))
    result = ok(invoke(fake_hub, "replay", "orders", "--from", "-1h", "--to", "-5m", "--no-wait"))
    assert [r.method for r in fake_hub.requests] == ["POST"]
    assert JOB_ID in result.stdout


def test_replay_of_an_inverted_interval_shows_the_hub_message(fake_hub: FakeHub) -> None:
    fake_hub.on("POST", "/admin/replays", 400, {"error": "`from` must be before `to`"})
    assert "`from` must be before `to`" in one_error_line(
        invoke(fake_hub, "replay", "o", "--from", "-1h", "--to", "-2h")
    )


def test_ctrl_c_cancels_the_job_on_the_hub(fake_hub: FakeHub) -> None:
    fake_hub.on("POST", "/admin/replays", 202, job("queued"))
    fake_hub.on("GET", f"/admin/replays/{JOB_ID}", body=job("running", 7, 5))
    fake_hub.on("DELETE", f"/admin/replays/{JOB_ID}", body=job("cancelled", 8, 5))
    command = [
        str(Path(sys.executable).parent / "hookhub"),
        "replay",
        "orders",
        "--from",
        "-1h",
        "--interval",
        "0.05",
    ]
    env = {"HOOKHUB_URL": fake_hub.url, "HOOKHUB_ADMIN_TOKEN": ADMIN_TOKEN, "PATH": "/usr/bin:/bin"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not any(r.method == "GET" for r in fake_hub.requests) and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert [r.method for r in fake_hub.requests if r.method != "GET"] == ["POST", "DELETE"]
    assert f"cancelled replay job {JOB_ID}" in err and "scanned 8" in err
    assert "Traceback" not in err


def test_replays_list_show_and_cancel(fake_hub: FakeHub) -> None:
    fake_hub.on("GET", "/admin/replays", body={"replays": [job("running", 40, 12)]})
    fake_hub.on("DELETE", f"/admin/replays/{JOB_ID}", body=job("cancelled", 41, 12))
    row = next(
        line
        for line in ok(invoke(fake_hub, "replays", "-s", "orders", "--limit", "5")).stdout.splitlines()
        if JOB_ID in line
    )
    assert "running" in row and "40" in row and "12" in row
    assert "cancelled" in ok(invoke(fake_hub, "replays", "cancel", JOB_ID)).stdout
    assert [(r.method, r.path, r.query) for r in fake_hub.requests] == [
        ("GET", "/admin/replays", {"subscription": "orders", "limit": "5"}),
        ("DELETE", f"/admin/replays/{JOB_ID}", {}),
    ]
    fake_hub.on("DELETE", f"/admin/replays/{JOB_ID}", 404, {"error": f"no replay job {JOB_ID}"})
    assert "no replay job" in one_error_line(invoke(fake_hub, "replays", "cancel", JOB_ID))
