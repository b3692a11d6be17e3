"""`/admin/dead-letters` against a real store and broker: list with filters and keyset pages,
show one with its attempts, replay onto the subscription's queue, purge."""

from __future__ import annotations

import base64

import pytest

from hookhub.events import Event
from hookhub.fanout.sender import delivery_id
from hookhub.store.records import AttemptRecord, DeadLetter
from tests.admin.conftest import FILE_SUB, Admin

T0 = 1_700_000_000.0


async def seed(admin: Admin, n: int, *, subscription: str = FILE_SUB, type: str = "com.test.a") -> list[str]:
    """`n` dead letters, dead one second apart from T0 (each after two attempts)."""
    ids = []
    for i in range(n):
        event = Event(
            id=f"{type}-{subscription}-{i}", source="/providers/test", type=type, data=b'{"n": %d}' % i
        )
        did = delivery_id(subscription, event)
        for attempt in (1, 2):
            record = AttemptRecord(
                did,
                subscription,
                event.source,
                event.id,
                event.type,
                event.correlationid or event.id,
                attempt,
                T0 + i - 0.5 * (2 - attempt),
                500,
                12.5,
                "HTTP 500",
                "retry" if attempt == 1 else "dead",
                T0 + i if attempt == 1 else None,
            )
            dead = None
            if attempt == 2:
                dead = DeadLetter(
                    did,
                    subscription,
                    event.source,
                    event.id,
                    event.type,
                    event.correlationid or event.id,
                    {k: v for k, v in event.attributes().items()},
                    event.data,
                    2,
                    500,
                    "HTTP 500",
                    T0 + i,
                )
            await admin.hub.store.attempts.record(record, dead)
        ids.append(did)
    return ids


async def test_list_filters_and_pages(admin: Admin) -> None:
    ids = await seed(admin, 5)
    other = await seed(admin, 2, type="com.test.b")
    response = await admin.client.get("/admin/dead-letters")
    assert response.status_code == 200
    body = response.json()
    assert len(body["dead_letters"]) == 7 and body["next_cursor"] is None
    first = body["dead_letters"][0]
    assert first["delivery_id"] in ids + other
    assert first["attempts"] == 2 and first["last_status"] == 500
    assert first["dead_at"] == "2023-11-14T22:13:20Z"

    typed = (await admin.client.get("/admin/dead-letters", params={"type": "com.test.b"})).json()
    assert {d["delivery_id"] for d in typed["dead_letters"]} == set(other)
    window = await admin.client.get(
        "/admin/dead-letters", params={"since": T0 + 1, "until": "2023-11-14T22:13:23Z"}
    )
    assert len(window.json()["dead_letters"]) == 3  # a1, a2, b1
    assert (await admin.client.get("/admin/dead-letters", params={"subscription": "ghost"})).json()[
        "dead_letters"
    ] == []

    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await admin.client.get("/admin/dead-letters", params=params)).json()
        seen += [d["delivery_id"] for d in page["dead_letters"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids + other) and len(seen) == 7


@pytest.mark.parametrize(
    ("params", "status", "word"),
    [
        ({"since": 20, "until": 10}, 400, "since"),
        ({"since": "2024-01-01T00:00:00Z", "until": "2024-01-01T00:00:00Z"}, 400, "until"),
        ({"since": "last tuesday"}, 422, "since"),
        ({"limit": 0}, 422, "limit"),
        ({"limit": 1001}, 422, "limit"),
        ({"cursor": "%%%"}, 422, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"1.0 nope").decode()}, 422, "cursor"),
        ({"subscription": "bad name"}, 422, "subscription"),
    ],
)
async def test_list_refusals(admin: Admin, params: dict[str, object], status: int, word: str) -> None:
    response = await admin.client.get("/admin/dead-letters", params=params)
    assert response.status_code == status, response.text
    assert word in response.json()["error"]


async def test_show_one_with_event_and_attempts(admin: Admin) -> None:
    (did,) = await seed(admin, 1)
    response = await admin.client.get(f"/admin/dead-letters/{did}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["delivery_id"] == did and body["replayed_at"] is None
    assert base64.b64decode(body["event"]["data_base64"]) == b'{"n": 0}'
    assert body["event"]["attributes"]["type"] == "com.test.a"
    assert [(a["attempt"], a["verdict"]) for a in body["attempt_log"]] == [(1, "retry"), (2, "dead")]
    assert body["attempt_log"][0]["next_attempt_at"] == "2023-11-14T22:13:20Z"


async def test_show_unknown_or_malformed_id(admin: Admin) -> None:
    response = await admin.client.get("/admin/dead-letters/msg_" + "a" * 26)
    assert response.status_code == 404
    assert "msg_" in response.json()["error"]
    response = await admin.client.get("/admin/dead-letters/not-an-id")
    assert response.status_code == 422
    assert "delivery_id" in response.json()["error"]


async def test_replay_by_ids_puts_them_back_on_the_queue(admin: Admin) -> None:
    ids = await seed(admin, 3)
    queue = admin.hub.queue_of(FILE_SUB)
    response = await admin.client.post("/admin/dead-letters/replay", json={"delivery_ids": ids[:2]})
    assert response.status_code == 200, response.text
    assert response.json() == {"replayed": 2}
    assert (await admin.hub.broker.queue_depths()).get(queue) == 2
    left = (await admin.client.get("/admin/dead-letters")).json()["dead_letters"]
    assert [d["delivery_id"] for d in left] == ids[2:]
    shown = (await admin.client.get(f"/admin/dead-letters/{ids[0]}")).json()
    assert shown["replayed_at"] is not None


async def test_replay_all_of_a_subscription(admin: Admin) -> None:
    await seed(admin, 4)
    response = await admin.client.post(
        "/admin/dead-letters/replay", json={"subscription": FILE_SUB, "until": T0 + 2}
    )
    assert response.json() == {"replayed": 2}
    response = await admin.client.post("/admin/dead-letters/replay", json={"subscription": FILE_SUB})
    assert response.json() == {"replayed": 2}
    assert (await admin.client.get("/admin/dead-letters")).json()["dead_letters"] == []


@pytest.mark.parametrize(
    ("body", "status", "word"),
    [
        ({}, 422, "delivery_ids"),
        ({"delivery_ids": []}, 422, "delivery_ids"),
        ({"delivery_ids": ["x"]}, 422, "delivery_ids.0"),
        ({"subscription": "ghost"}, 404, "ghost"),
        ({"subscription": FILE_SUB, "since": 5, "until": 1}, 400, "since"),
        ({"subscription": FILE_SUB, "everything": True}, 422, "everything"),
    ],
)
async def test_replay_refusals(admin: Admin, body: dict[str, object], status: int, word: str) -> None:
    response = await admin.client.post("/admin/dead-letters/replay", json=body)
    assert response.status_code == status, response.text
    assert word in response.json()["error"]


async def test_purge(admin: Admin) -> None:
    ids = await seed(admin, 3)
    other = await seed(admin, 1, type="com.test.b")
    response = await admin.client.post("/admin/dead-letters/purge", json={"delivery_ids": ids[:1]})
    assert response.json() == {"purged": 1}
    response = await admin.client.post(
        "/admin/dead-letters/purge", json={"subscription": FILE_SUB, "type": "com.test.a"}
    )
    assert response.json() == {"purged": 2}
    left = (await admin.client.get("/admin/dead-letters")).json()["dead_letters"]
    assert [d["delivery_id"] for d in left] == other
    assert (await admin.client.get(f"/admin/dead-letters/{ids[0]}")).status_code == 404
    assert (await admin.client.post("/admin/dead-letters/purge", json={})).status_code == 422
