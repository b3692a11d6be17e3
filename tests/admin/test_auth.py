"""Who may use the admin API: the admin token, compared in constant time; nobody without one
configured. The OpenAPI description is public and names the real `/admin/...` paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from hookhub.admin import auth, create_admin_app
from tests.admin.conftest import AUTH, TOKEN, Admin, admin_app, admin_config, running_admin


async def test_openapi_is_public_and_names_full_paths(admin: Admin) -> None:
    response = await admin.client.get("/admin/openapi.json", headers={"Authorization": ""})
    assert response.status_code == 200
    doc = response.json()
    assert doc["paths"] and all(path.startswith("/admin/") for path in doc["paths"])
    assert "servers" not in doc  # paths are absolute: no base to prepend
    assert {
        "/admin/subscriptions/{name}/rotate-secret",
        "/admin/dead-letters/replay",
        "/admin/broker",
    } <= set(doc["paths"])
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    listing = doc["paths"]["/admin/subscriptions"]["get"]
    assert listing["security"] == [{"HTTPBearer": []}]
    assert set(listing["responses"]) >= {"200", "401", "403", "503"}
    assert doc == create_admin_app(admin_getter(admin)).openapi()


def admin_getter(admin: Admin) -> Any:
    async def get() -> Any:
        return admin.hub

    return get


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer wrong",
        f"Basic {TOKEN}",
        "Bearer admin-token-e",
        "Bearer x" * 500,
    ],
)
async def test_missing_or_wrong_token_is_401_with_a_challenge(
    admin: Admin, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization.encode()}
    transport = httpx.ASGITransport(app=admin_app(admin.hub))
    async with httpx.AsyncClient(transport=transport, base_url="http://hub", headers=headers) as c:
        response = await c.get("/admin/subscriptions")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "token" in response.json()["error"]


async def test_right_token_passes_and_is_compared_in_constant_time(
    admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[Any, Any]] = []
    real = auth.hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    response = await admin.client.get("/admin/subscriptions", headers=AUTH)
    assert response.status_code == 200, response.text
    assert compared == [(TOKEN.encode(), TOKEN.encode())]  # bytes, so non-ASCII tokens work


async def test_no_admin_token_configured_is_403(tmp_path: Path, namespace: str) -> None:
    config = admin_config(tmp_path, namespace)
    del config["admin_token"]
    async with running_admin(config) as admin:
        response = await admin.client.get("/admin/subscriptions")
        assert response.status_code == 403
        assert response.json() == {"error": "the admin API is disabled: set admin_token"}
        assert (await admin.client.get("/admin/openapi.json")).status_code == 200


async def test_unknown_path_and_method_answer_json_errors(admin: Admin) -> None:
    response = await admin.client.get("/admin/nothing-here")
    assert response.status_code == 404
    assert "error" in response.json()
    response = await admin.client.put("/admin/subscriptions")
    assert response.status_code == 405
    assert "error" in response.json()
