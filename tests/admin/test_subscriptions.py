"""`/admin/subscriptions` against a real hub: file subscriptions are listed and read-only,
runtime ones are created, changed, rotated, paused, resumed and deleted."""

from __future__ import annotations

import time

import pytest

from tests.admin.conftest import FILE_SUB, SECRET, Admin

NEW = {"name": "crm", "url": "http://127.0.0.1:9/crm", "types": ["com.stripe.invoice.*"]}


async def create(admin: Admin, **fields: object) -> dict[str, object]:
    response = await admin.client.post("/admin/subscriptions", json={**NEW, **fields})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_listing_shows_file_subscription_with_state_and_depth(admin: Admin) -> None:
    response = await admin.client.get("/admin/subscriptions")
    assert response.status_code == 200
    (sub,) = response.json()["subscriptions"]
    assert sub["name"] == FILE_SUB
    assert sub["origin"] == "file"
    assert sub["mode"] == "push"
    assert sub["state"] == "active"
    assert sub["queue"] == admin.hub.topology.subscription_queue(FILE_SUB)
    assert sub["depth"] == 0
    assert sub["backoff"] == {"initial": 1.0, "max": 3600.0, "multiplier": 2.0, "jitter": 1.0}
    assert "secret" not in sub and SECRET not in response.text


async def test_create_generates_a_secret_once_and_lists_it(admin: Admin) -> None:
    created = await create(admin, max_attempts=3, backoff={"initial": "2s"}, timeout="5s")
    assert str(created["secret"]).startswith("whsec_")
    assert created["origin"] == "api"
    assert created["max_attempts"] == 3
    assert created["timeout"] == 5.0
    assert created["backoff"]["initial"] == 2.0  # type: ignore[index]
    assert created["created_at"].endswith("Z")  # type: ignore[union-attr]
    shown = (await admin.client.get("/admin/subscriptions/crm")).json()
    assert shown["url"] == NEW["url"]
    assert "secret" not in shown
    names = [s["name"] for s in (await admin.client.get("/admin/subscriptions")).json()["subscriptions"]]
    assert names == ["crm", FILE_SUB]
    assert "crm" in admin.hub.registry.current()


async def test_create_keeps_a_given_secret_and_makes_pull_subscriptions(admin: Admin) -> None:
    assert (await create(admin, secret=SECRET))["secret"] == SECRET
    pull = await create(admin, name="warehouse", mode="pull", token="pull-token", url=None)
    assert pull["mode"] == "pull" and pull["secret"] is None
    assert pull["visibility_timeout"] == 30.0


@pytest.mark.parametrize("name", ["crm", FILE_SUB])
async def test_create_an_existing_name_is_409(admin: Admin, name: str) -> None:
    await create(admin)
    response = await admin.client.post("/admin/subscriptions", json={**NEW, "name": name})
    assert response.status_code == 409
    assert name in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({**NEW, "types": []}, 422, ["types"]),
        ({**NEW, "types": ["a..b"]}, 422, ["types.0", "type pattern"]),
        ({**NEW, "max_attempts": "many"}, 422, ["max_attempts"]),
        ({**NEW, "max_attempts": 0}, 422, ["max_attempts"]),
        ({**NEW, "name": "bad name"}, 422, ["name"]),
        ({**NEW, "colour": "red"}, 422, ["colour"]),
        ({**NEW, "secret": "not-whsec"}, 422, ["secret"]),
        ({**NEW, "secret": "whsec_!!"}, 422, ["secret"]),
        ({"name": "x", "types": ["#"]}, 422, ["url"]),  # push needs a url: the registry says so
        ({"name": "x", "types": ["#"], "mode": "pull"}, 422, ["token"]),
        ({**NEW, "timeout": "forever"}, 422, ["timeout"]),
        ([1, 2], 422, ["request body"]),
    ],
)
async def test_create_refuses_bad_fields_naming_them(
    admin: Admin, body: object, status: int, words: list[str]
) -> None:
    response = await admin.client.post("/admin/subscriptions", json=body)
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert all(word in message for word in words), message
    assert "x" not in admin.hub.registry.current()


async def test_bad_json_is_400(admin: Admin) -> None:
    response = await admin.client.post(
        "/admin/subscriptions", content=b'{"name": "crm",', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json() == {"error": "the request body is not valid JSON"}
    response = await admin.client.post("/admin/subscriptions", content=b'{"name": "crm"}')
    assert response.status_code == 422
    assert "Content-Type: application/json" in response.json()["error"]


async def test_patch_changes_given_fields_only(admin: Admin) -> None:
    await create(admin, max_attempts=3)
    response = await admin.client.patch(
        "/admin/subscriptions/crm", json={"url": "http://127.0.0.1:9/new", "backoff": {"max": "10m"}}
    )
    assert response.status_code == 200, response.text
    sub = response.json()
    assert sub["url"] == "http://127.0.0.1:9/new"
    assert sub["max_attempts"] == 3
    assert sub["backoff"]["max"] == 600.0 and sub["backoff"]["initial"] == 1.0
    assert str(admin.hub.registry.get("crm").config.url) == "http://127.0.0.1:9/new"


@pytest.mark.parametrize(
    ("name", "body", "status"),
    [
        (FILE_SUB, {"max_attempts": 2}, 409),
        ("ghost", {"max_attempts": 2}, 404),
        ("crm", {"mode": "pull"}, 422),
        ("crm", {"name": "other"}, 422),
        ("crm", {"types": []}, 422),
        ("bad name!", {"max_attempts": 2}, 422),
    ],
)
async def test_patch_refusals(admin: Admin, name: str, body: dict[str, object], status: int) -> None:
    await create(admin)
    response = await admin.client.patch(f"/admin/subscriptions/{name}", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]


async def test_rotate_secret_keeps_the_old_one_during_the_overlap(admin: Admin) -> None:
    old = (await create(admin))["secret"]
    before = time.time()
    response = await admin.client.post("/admin/subscriptions/crm/rotate-secret", json={"overlap": "2h"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["secret"].startswith("whsec_") and body["secret"] != old
    sub = admin.hub.registry.get("crm")
    assert sub.previous_secret == old
    assert sub.previous_secret_expires_at is not None
    assert before + 7200 <= sub.previous_secret_expires_at <= time.time() + 7200
    assert body["previous_expires_at"].endswith("Z")
    shown = (await admin.client.get("/admin/subscriptions/crm")).json()
    assert shown["secret_rotating_until"] == body["previous_expires_at"]
    given = await admin.client.post("/admin/subscriptions/crm/rotate-secret", json={"secret": SECRET})
    assert given.json()["secret"] == SECRET
    assert (await admin.client.post("/admin/subscriptions/crm/rotate-secret")).status_code == 200


@pytest.mark.parametrize(
    ("name", "body", "status"),
    [
        (FILE_SUB, {}, 409),
        ("ghost", {}, 404),
        ("crm", {"overlap": "-1h"}, 422),
        ("crm", {"secret": "x"}, 422),
    ],
)
async def test_rotate_refusals(admin: Admin, name: str, body: dict[str, object], status: int) -> None:
    await create(admin)
    response = await admin.client.post(f"/admin/subscriptions/{name}/rotate-secret", json=body)
    assert response.status_code == status, response.text


async def test_pause_and_resume(admin: Admin) -> None:
    response = await admin.client.post(f"/admin/subscriptions/{FILE_SUB}/pause", json={"reason": "deploy"})
    assert response.status_code == 200, response.text
    assert (response.json()["state"], response.json()["state_reason"]) == ("paused", "deploy")
    states = await admin.hub.store.subscriptions.all()
    assert states[FILE_SUB].value == "paused"
    listed = (await admin.client.get("/admin/subscriptions")).json()["subscriptions"][0]
    assert listed["state"] == "paused"
    response = await admin.client.post(f"/admin/subscriptions/{FILE_SUB}/resume")
    assert response.status_code == 200
    assert response.json()["state"] == "active"
    assert FILE_SUB not in await admin.hub.store.subscriptions.all()
    assert (await admin.client.post(f"/admin/subscriptions/{FILE_SUB}/pause")).json()["state"] == "paused"


@pytest.mark.parametrize("action", ["pause", "resume"])
async def test_pause_resume_unknown_is_404(admin: Admin, action: str) -> None:
    response = await admin.client.post(f"/admin/subscriptions/ghost/{action}")
    assert response.status_code == 404
    assert response.json() == {"error": "no subscription named 'ghost'"}


async def test_delete(admin: Admin) -> None:
    await create(admin)
    response = await admin.client.delete("/admin/subscriptions/crm")
    assert response.status_code == 204 and response.content == b""
    assert (await admin.client.get("/admin/subscriptions/crm")).status_code == 404
    assert "crm" not in admin.hub.registry.current()
    assert (await admin.client.delete("/admin/subscriptions/crm")).status_code == 404
    response = await admin.client.delete(f"/admin/subscriptions/{FILE_SUB}")
    assert response.status_code == 409
    assert "hookhub.yaml" in response.json()["error"]
