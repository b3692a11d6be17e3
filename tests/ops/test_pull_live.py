"""Pull subscriptions end to end over HTTP, on the SQLite broker and on RabbitMQ: batches up to
`max`, long polls, acknowledgements, an unacknowledged event back after the visibility timeout
as the next attempt, and a dead letter once it is out of attempts, as a push delivery would be."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.http.conftest import HubClient, delete_namespace, running_hub
from tests.ops._live import ADMIN, admin_get, admin_post, hub_config, produce, push, until

TOKEN = "pull-consumer-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def config(broker_url: str, tmp_path: Any, namespace: str) -> dict[str, Any]:
    return hub_config(
        broker_url,
        tmp_path,
        namespace,
        p={
            "mode": "pull",
            "types": ["com.acme.#"],
            "token": TOKEN,
            "visibility_timeout": "1s",
            "max_attempts": 2,
        },
        pushed=push("http://127.0.0.1:9/never", "nothing.matches.this"),
    )


async def pull(hub: HubClient, max: int = 100, wait: float = 0, name: str = "p") -> list[dict[str, Any]]:
    response = await hub.client.post(
        f"/subscriptions/{name}/pull", json={"max": max, "wait": wait}, headers=AUTH, timeout=40
    )
    assert response.status_code == 200, response.text
    return list(response.json()["events"])


async def ack(hub: HubClient, receipts: list[str]) -> int:
    response = await hub.client.post("/subscriptions/p/ack", json={"ids": receipts}, headers=AUTH)
    assert response.status_code == 200, response.text
    return int(response.json()["acked"])


async def test_pulled_in_batches_up_to_max_and_acknowledged(
    broker_url: str, tmp_path: Any, namespace: str
) -> None:
    async with running_hub(config(broker_url, tmp_path, namespace)) as hub:
        try:
            ids = await produce(hub, 5)
            first = await pull(hub, max=3, wait=5)
            assert len(first) == 3
            rest = await pull(hub, max=10, wait=2)
            got = first + rest
            assert sorted(e["id"] for e in got) == sorted(ids)  # each once
            assert all(e["attempt"] == 1 and e["receipt"] for e in got)
            assert len({e["receipt"] for e in got}) == 5
            assert all(e["type"] == "com.acme.invoice.paid" and e["source"] == "/billing" for e in got)
            assert sorted(e["data"]["n"] for e in got) == [0, 1, 2, 3, 4]
            assert not any("hookhubreceipt" in e for e in got)  # the hub's tag never leaves it
            assert await pull(hub) == []

            assert await ack(hub, [e["receipt"] for e in got]) == 5
            assert await ack(hub, [e["receipt"] for e in got]) == 0  # once only
            assert await ack(hub, ["not-a-receipt-of-ours"]) == 0
            assert await pull(hub, wait=2) == []  # acknowledged: nothing comes back

            (traced,) = (await admin_get(hub, f"/events/{ids[0]}"))["events"]
            assert [a["verdict"] for a in sorted(traced["attempts"], key=lambda a: a["attempted_at"])] == [
                "pulled",
                "delivered",
            ]
        finally:
            await delete_namespace(broker_url, hub.hub)


async def test_a_long_poll_answers_when_an_event_arrives_or_when_the_wait_is_over(
    broker_url: str, tmp_path: Any, namespace: str
) -> None:
    async with running_hub(config(broker_url, tmp_path, namespace)) as hub:
        try:
            started = time.monotonic()
            assert await pull(hub, wait=1) == []
            assert 0.9 <= time.monotonic() - started < 5

            waiting = asyncio.create_task(pull(hub, wait=10))
            await asyncio.sleep(0.5)
            assert not waiting.done()
            started = time.monotonic()
            (event_id,) = await produce(hub)
            (got,) = await asyncio.wait_for(waiting, 9)
            assert got["id"] == event_id and time.monotonic() - started < 5
            assert await ack(hub, [got["receipt"]]) == 1
        finally:
            await delete_namespace(broker_url, hub.hub)


async def test_unacknowledged_comes_back_as_the_next_attempt_then_dead_letters(
    broker_url: str, tmp_path: Any, namespace: str
) -> None:
    async with running_hub(config(broker_url, tmp_path, namespace)) as hub:
        try:
            (event_id,) = await produce(hub)
            (first,) = await pull(hub, wait=5)
            assert first["attempt"] == 1
            assert await pull(hub) == []  # invisible during the visibility timeout
            (second,) = await pull(hub, wait=5)  # back once it is over
            assert (second["id"], second["attempt"]) == (event_id, 2)
            assert second["receipt"] != first["receipt"]
            assert await pull(hub, wait=3) == []  # out of attempts: dead, not handed out again

            (dead,) = (await admin_get(hub, "/dead-letters", subscription="p"))["dead_letters"]
            assert (dead["event_id"], dead["attempts"]) == (event_id, 2)
            shown = await admin_get(hub, f"/dead-letters/{dead['delivery_id']}")
            log = [(a["attempt"], a["verdict"]) for a in shown["attempt_log"]]
            assert log == [(1, "pulled"), (1, "retry"), (2, "pulled"), (2, "dead")], log
            assert "not acknowledged" in (shown["last_error"] or "")

            # replayed like a push dead letter: handed out again from attempt 1
            assert await admin_post(hub, "/dead-letters/replay", {"subscription": "p"}) == {"replayed": 1}
            (again,) = await pull(hub, wait=5)
            assert (again["id"], again["attempt"]) == (event_id, 1)
            assert await ack(hub, [again["receipt"]]) == 1
            assert (await admin_get(hub, "/dead-letters", subscription="p"))["dead_letters"] == []
        finally:
            await delete_namespace(broker_url, hub.hub)


async def test_only_the_subscriptions_token_pulls(broker_url: str, tmp_path: Any, namespace: str) -> None:
    async with running_hub(config(broker_url, tmp_path, namespace)) as hub:
        try:
            await produce(hub)
            for headers in ({}, {"Authorization": "Bearer wrong"}, ADMIN):
                response = await hub.client.post("/subscriptions/p/pull", json={}, headers=headers)
                assert response.status_code == 401, response.text
            for name in ("nope", "pushed"):  # unknown, or a push subscription
                response = await hub.client.post(f"/subscriptions/{name}/pull", json={}, headers=AUTH)
                assert response.status_code == 404, response.text
            response = await hub.client.post("/subscriptions/p/pull", json={"max": 0}, headers=AUTH)
            assert response.status_code == 422 and "max" in response.json()["error"]
            (event,) = await until(lambda: pull(hub, wait=1), "the event")  # none was handed out above
            assert await ack(hub, [event["receipt"]]) == 1
        finally:
            await delete_namespace(broker_url, hub.hub)
