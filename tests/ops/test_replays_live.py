"""Interval resends end to end, on the SQLite broker and on RabbitMQ: events are archived by the
running hub's archiver, previewed with a dry run, resent by a background job (with the
`hookhub-replay` header and a valid signature), followed, cancelled, and carried across a hub
restart without losing or repeating an event."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from tests.http.conftest import HubClient, delete_namespace, running_hub
from tests.ops._live import (
    ADMIN,
    SECRET,
    admin_get,
    admin_post,
    hub_config,
    produce,
    push,
    until,
    verified,
)
from tests.support.subscriber import Received, Subscriber

ARCHIVED = 20.0  # the archiver flushes every second; RabbitMQ adds its own latency


def replay_body(name: str, start: float, end: float, **more: Any) -> dict[str, Any]:
    return {"subscription": name, "from": start, "to": end, **more}


async def archived(hub: HubClient, name: str, start: float, end: float, n: int) -> dict[str, Any]:
    """The dry run of [start, end) once it counts `n` archived events."""

    async def dry() -> dict[str, Any] | None:
        answer = await admin_post(hub, "/replays", replay_body(name, start, end, dry_run=True))
        assert answer["count"] <= n, answer
        return answer if answer["count"] == n else None

    return await until(dry, f"{n} archived events", ARCHIVED)


async def finished(hub: HubClient, job_id: str, timeout: float = 20.0) -> dict[str, Any]:
    async def job() -> dict[str, Any] | None:
        answer = await admin_get(hub, f"/replays/{job_id}")
        return answer if answer["state"] in ("done", "failed", "cancelled") else None

    return await until(job, f"job {job_id} to finish", timeout)


def replays(subscriber: Subscriber, path: str, job_id: str) -> list[Received]:
    return [r for r in subscriber.requests(path) if r.headers.get("hookhub-replay") == job_id]


async def test_a_dry_run_then_a_job_resends_the_matching_archived_events(
    broker_url: str, tmp_path: Any, namespace: str, subscriber: Subscriber
) -> None:
    config = hub_config(broker_url, tmp_path, namespace, r=push(subscriber.url("/r"), "com.acme.invoice.*"))
    async with running_hub(config) as hub:
        try:
            start = time.time() - 5
            ids = await produce(hub, 5)
            await produce(hub, 2, type_="com.acme.order.created")  # archived, but not r's
            end = time.time() + 5
            originals = await subscriber.wait_for_async(5, 10, path="/r")
            assert all("hookhub-replay" not in r.headers for r in originals)

            dry = await archived(hub, "r", start, end, 5)
            assert sorted(s["id"] for s in dry["sample"]) == sorted(ids)
            assert all(s["type"] == "com.acme.invoice.paid" for s in dry["sample"])
            assert dry["first"] is not None and dry["first"] <= dry["last"]
            assert dry["from"] and dry["to"]
            await asyncio.sleep(0.3)
            assert len(subscriber.requests("/r")) == 5  # a dry run sends nothing
            empty = await admin_post(hub, "/replays", replay_body("r", start - 3600, start, dry_run=True))
            assert empty["count"] == 0 and empty["sample"] == [] and empty["first"] is None

            job = await admin_post(hub, "/replays", replay_body("r", start, end), status=202)
            assert job["state"] in ("queued", "running") and job["subscription"] == "r"
            done = await finished(hub, job["id"])
            assert (done["state"], done["sent"], done["scanned"]) == ("done", 5, 7), done
            assert done["finished_at"] is not None and done["error"] is None

            await until(lambda: _count(subscriber, "/r", job["id"], 5), "5 resent events")
            resent = replays(subscriber, "/r", job["id"])
            assert sorted(r.ce_id or "" for r in resent) == sorted(ids)
            assert all(verified(SECRET, r) for r in resent)
            first_ids = {r.headers["webhook-id"] for r in originals}
            assert not first_ids & {r.headers["webhook-id"] for r in resent}  # deliveries of their own
            assert [r.headers["hookhub-attempt"] for r in resent] == ["1"] * 5

            listed = (await admin_get(hub, "/replays", subscription="r"))["replays"]
            assert [j["id"] for j in listed] == [job["id"]]
            # refused: an inverted interval, an unknown subscription or job
            response = await hub.client.post(
                "/admin/replays", json=replay_body("r", end, start), headers=ADMIN
            )
            assert response.status_code == 400, response.text
            response = await hub.client.post(
                "/admin/replays", json=replay_body("x", start, end), headers=ADMIN
            )
            assert response.status_code == 404, response.text
            response = await hub.client.get("/admin/replays/" + "0" * 32, headers=ADMIN)
            assert response.status_code == 404
        finally:
            await delete_namespace(broker_url, hub.hub)


async def test_a_cancelled_job_stops_sending(
    broker_url: str, tmp_path: Any, namespace: str, subscriber: Subscriber
) -> None:
    async with running_hub(hub_config(broker_url, tmp_path, namespace)) as hub:
        try:
            _, _, job = await _start_slow_job(hub, subscriber, 20)
            cancelled = await _cancel(hub, job["id"])
            assert cancelled["state"] == "cancelled" and cancelled["finished_at"] is not None
            time_after = await admin_get(hub, f"/replays/{job['id']}")
            await asyncio.sleep(1.5)
            later = await admin_get(hub, f"/replays/{job['id']}")
            assert later["state"] == "cancelled" and later["sent"] == time_after["sent"] < 20
            assert (await _cancel(hub, job["id"]))["state"] == "cancelled"  # again: as it is
        finally:
            await delete_namespace(broker_url, hub.hub)


async def test_a_job_survives_a_hub_restart_with_an_exact_count(
    broker_url: str, tmp_path: Any, namespace: str, subscriber: Subscriber
) -> None:
    config = hub_config(broker_url, tmp_path, namespace)
    n = 15
    async with running_hub(config) as hub:
        try:
            created, ids, job = await _start_slow_job(hub, subscriber, n)
        except BaseException:
            await delete_namespace(broker_url, hub.hub)
            raise
    # stopped mid-job: handed back with its exact position
    async with running_hub(config) as hub:
        try:
            stored = await hub.hub.store.jobs.get(job["id"])
            assert stored is not None and 2 <= stored.sent < n, stored
            done = await finished(hub, job["id"])
            assert (done["state"], done["sent"], done["scanned"]) == ("done", n, n), done
            response = await hub.client.patch(
                "/admin/subscriptions/slow", json={"rate_limit": 1000}, headers=ADMIN
            )
            assert response.status_code == 200, response.text
            await until(lambda: _count(subscriber, "/slow", job["id"], n), f"{n} resent events")
            await asyncio.sleep(0.5)
            resent = Counter(r.ce_id for r in replays(subscriber, "/slow", job["id"]))
            assert set(resent) == set(ids)
            assert set(resent.values()) == {1}, resent  # a graceful stop repeats none
            assert all(verified(created["secret"], r) for r in replays(subscriber, "/slow", job["id"]))
        finally:
            await delete_namespace(broker_url, hub.hub)


async def _cancel(hub: HubClient, job_id: str) -> dict[str, Any]:
    response = await hub.client.delete(f"/admin/replays/{job_id}", headers=ADMIN)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _count(subscriber: Subscriber, path: str, job_id: str, n: int) -> bool:
    return len(replays(subscriber, path, job_id)) >= n


async def _start_slow_job(
    hub: HubClient, subscriber: Subscriber, n: int
) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """A rate-limited runtime subscription `slow`, `n` archived events, and a resend job of
    them that has sent a few: (the subscription as created, the event ids, the job)."""
    created = await admin_post(
        hub,
        "/subscriptions",
        {"name": "slow", "url": subscriber.url("/slow"), "types": ["com.acme.#"], "rate_limit": 5},
        status=201,
    )
    start = time.time() - 5
    ids = await produce(hub, n)
    end = time.time() + 5
    await archived(hub, "slow", start, end, n)
    job = await admin_post(hub, "/replays", replay_body("slow", start, end), status=202)

    async def sending() -> bool:
        return bool((await admin_get(hub, f"/replays/{job['id']}"))["sent"] >= 2)

    await until(sending, "the job to send")
    return created, ids, job
