"""The subscription catalog: API-created subscriptions, their secrets in clear, survive restarts."""

from __future__ import annotations

from hookhub.store import SqlStore, StoredSubscription
from tests.store.factories import uid


def stored(name: str, **overrides: object) -> StoredSubscription:
    fields: dict[str, object] = {
        "name": name,
        "config": {
            "url": "https://crm.example/hooks",
            "types": ["com.acme.*"],
            "secret": "whsec_c2VjcmV0",
            "backoff": {"initial": 1.0, "max": 60.0},
            "note": "naïve ☃",
        },
        "created_at": 1000.0,
        "updated_at": 1000.0,
    }
    fields.update(overrides)
    return StoredSubscription(**fields)  # type: ignore[arg-type]


async def test_create_get_list_round_trip(store: SqlStore) -> None:
    crm, shop = (
        stored(uid("crm")),
        stored(uid("shop"), previous_secret="whsec_b2xk", previous_secret_expires_at=5.5),
    )
    assert await store.catalog.create(crm) is True
    assert await store.catalog.create(shop) is True
    assert await store.catalog.get(crm.name) == crm
    assert await store.catalog.get(shop.name) == shop
    assert await store.catalog.get(uid("none")) is None
    listed = [s for s in await store.catalog.list() if s.name in (crm.name, shop.name)]
    assert listed == sorted([crm, shop], key=lambda s: s.name)
    other = SqlStore(store.url)  # durable: another process reads it
    try:
        assert await other.catalog.get(crm.name) == crm
    finally:
        await other.close()


async def test_create_refuses_an_existing_name(store: SqlStore) -> None:
    first = stored(uid("crm"))
    assert await store.catalog.create(first)
    assert await store.catalog.create(stored(first.name, config={"url": "https://other"})) is False
    assert await store.catalog.get(first.name) == first  # untouched


async def test_update_replaces_all_but_created_at(store: SqlStore) -> None:
    sub = stored(uid("crm"))
    assert await store.catalog.update(sub) is False  # unknown
    await store.catalog.create(sub)
    changed = stored(
        sub.name,
        config={**sub.config, "url": "https://crm.example/v2"},
        created_at=9999.0,
        updated_at=2000.0,
        previous_secret="whsec_b2xk",
        previous_secret_expires_at=3000.0,
    )
    assert await store.catalog.update(changed) is True
    got = await store.catalog.get(sub.name)
    assert got is not None
    assert got.config["url"] == "https://crm.example/v2" and got.config["secret"] == "whsec_c2VjcmV0"
    assert (got.created_at, got.updated_at) == (1000.0, 2000.0)
    assert (got.previous_secret, got.previous_secret_expires_at) == ("whsec_b2xk", 3000.0)
    changed.previous_secret, changed.previous_secret_expires_at = None, None  # the overlap ended
    await store.catalog.update(changed)
    got = await store.catalog.get(sub.name)
    assert got is not None and got.previous_secret is None and got.previous_secret_expires_at is None


async def test_delete(store: SqlStore) -> None:
    sub = stored(uid("crm"))
    await store.catalog.create(sub)
    assert await store.catalog.delete(sub.name) is True
    assert await store.catalog.delete(sub.name) is False
    assert await store.catalog.get(sub.name) is None
    assert await store.catalog.create(sub) is True  # the name is free again
