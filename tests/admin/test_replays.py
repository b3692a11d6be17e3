"""`/admin/replays` over a real file archive: dry run counts what matches, a job is queued,
listed, followed and cancelled; bad intervals and ids are refused."""

from __future__ import annotations

import pytest

from hookhub.events import Event
from tests.admin.conftest import FILE_SUB, Admin

HOUR = "2024-05-01T12:%02d:00Z"
FROM, TO = "2024-05-01T12:00:00Z", "2024-05-01T13:00:00Z"


async def archive(admin: Admin) -> None:
    """Six events in the hour: four the file subscription takes (com.test.#), two it does not,
    plus one just outside the interval."""
    events = [
        Event(id=f"e{i}", source="/t", type="com.test.x", data=b"{}", time=HOUR % (i * 10)) for i in range(4)
    ]
    events += [
        Event(id=f"o{i}", source="/t", type="com.other.x", data=b"{}", time=HOUR % 5) for i in range(2)
    ]
    events.append(Event(id="late", source="/t", type="com.test.x", data=b"{}", time="2024-05-01T13:00:00Z"))
    await admin.hub.archive.write(events)


async def test_dry_run_counts_and_samples_without_sending(admin: Admin) -> None:
    await archive(admin)
    body = {"subscription": FILE_SUB, "from": FROM, "to": TO, "dry_run": True}
    response = await admin.client.post("/admin/replays", json=body)
    assert response.status_code == 200, response.text
    dry = response.json()
    assert dry["count"] == 4
    assert [e["id"] for e in dry["sample"]] == ["e0", "e1", "e2", "e3"]
    assert dry["sample"][1]["time"] == "2024-05-01T12:10:00Z"
    assert (dry["first"], dry["last"]) == ("2024-05-01T12:00:00Z", "2024-05-01T12:30:00Z")
    assert (dry["from"], dry["to"]) == (FROM, TO)
    assert (await admin.hub.broker.queue_depths()).get(admin.hub.queue_of(FILE_SUB), 0) == 0
    assert await admin.hub.store.jobs.list() == []


async def test_job_is_queued_listed_followed_and_cancelled(admin: Admin) -> None:
    response = await admin.client.post(
        "/admin/replays", json={"subscription": FILE_SUB, "from": FROM, "to": 1714568400}
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["state"] == "queued" and (job["from"], job["to"]) == (FROM, TO)
    assert job["subscription"] == FILE_SUB and job["sent"] == 0 and job["finished_at"] is None
    shown = await admin.client.get(f"/admin/replays/{job['id']}")
    assert shown.status_code == 200 and shown.json()["id"] == job["id"]
    listed = (await admin.client.get("/admin/replays", params={"subscription": FILE_SUB})).json()["replays"]
    assert [j["id"] for j in listed] == [job["id"]]
    assert (await admin.client.get("/admin/replays", params={"subscription": "other"})).json() == {
        "replays": []
    }
    cancelled = await admin.client.delete(f"/admin/replays/{job['id']}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"
    assert (await admin.hub.store.jobs.get(job["id"])).state == "cancelled"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("body", "status", "word"),
    [
        ({"subscription": FILE_SUB, "from": TO, "to": FROM}, 400, "from"),
        ({"subscription": FILE_SUB, "from": FROM, "to": FROM}, 400, "to"),
        ({"subscription": "ghost", "from": FROM, "to": TO}, 404, "ghost"),
        ({"subscription": FILE_SUB, "from": "noon", "to": TO}, 422, "from"),
        ({"subscription": FILE_SUB, "to": TO}, 422, "from"),
        ({"subscription": FILE_SUB, "from": FROM, "to": TO, "dry_run": "perhaps"}, 422, "dry_run"),
    ],
)
async def test_submit_refusals(admin: Admin, body: dict[str, object], status: int, word: str) -> None:
    response = await admin.client.post("/admin/replays", json=body)
    assert response.status_code == status, response.text
    assert word in response.json()["error"]
    assert await admin.hub.store.jobs.list() == []


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_unknown_or_malformed_job_id(admin: Admin, method: str) -> None:
    response = await admin.client.request(method, "/admin/replays/" + "0" * 32)
    assert response.status_code == 404
    assert "0" * 32 in response.json()["error"]
    response = await admin.client.request(method, "/admin/replays/not-a-job")
    assert response.status_code == 422
    assert "job_id" in response.json()["error"]
