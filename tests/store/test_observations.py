"""What the ingest side saw: rejections bounded per provider, event types counted per origin."""

from __future__ import annotations

import asyncio
import time

from hookhub.store import EventTypeSeen, Rejection, SqlStore
from tests.store.factories import uid


async def test_rejections_are_trimmed_per_provider(store: SqlStore) -> None:
    noisy, quiet = uid("stripe"), uid("github")
    first = [Rejection(noisy, 100.0 + i, 401, f"bad signature {i}") for i in range(4)]
    await store.observations.record_rejections(
        [*first, Rejection(quiet, 50.0, 413, "too large")], keep_per_provider=3
    )
    # equal times: the later write is the newer one
    await store.observations.record_rejections(
        [Rejection(noisy, 103.0, 400, "tie"), Rejection(noisy, 101.5, 400, "older")], keep_per_provider=3
    )
    kept = await store.observations.rejections(noisy)
    assert [(r.at, r.reason) for r in kept] == [
        (103.0, "tie"),
        (103.0, "bad signature 3"),
        (102.0, "bad signature 2"),
    ]
    assert await store.observations.rejections(quiet) == [Rejection(quiet, 50.0, 413, "too large")]
    assert [r.reason for r in await store.observations.rejections(noisy, limit=1)] == ["tie"]


async def test_rejections_of_every_provider_newest_first(store: SqlStore) -> None:
    a, b = uid("a"), uid("b")
    now = time.time() + 3e9  # later than any earlier run's rows in the shared database
    await store.observations.record_rejections([Rejection(a, now, 401, "x"), Rejection(b, now + 1, 401, "y")])
    latest = await store.observations.rejections(limit=2)
    assert [(r.provider, r.at) for r in latest] == [(b, now + 1), (a, now)]
    long = Rejection(a, now + 2, 400, "r" * 5000)
    await store.observations.record_rejections([long])
    [stored] = await store.observations.rejections(a, limit=1)
    assert stored.reason.startswith("rrr") and len(stored.reason) <= 500  # bounded per row


async def test_count_types_accumulates(store: SqlStore) -> None:
    stripe, shop = uid("stripe"), uid("shop")
    await store.observations.count_types(
        [
            EventTypeSeen(stripe, "invoice.paid", 2, 100.0),
            EventTypeSeen(stripe, "invoice.paid", 3, 90.0),  # twice in one batch
            EventTypeSeen(shop, "orders/create", 1, 50.0),
        ]
    )
    await asyncio.gather(
        store.observations.count_types([EventTypeSeen(stripe, "invoice.paid", 10, 80.0)]),  # older
        store.observations.count_types([EventTypeSeen(stripe, "charge.failed", 1, 120.0)]),
    )
    assert await store.observations.event_types(stripe) == [
        EventTypeSeen(stripe, "charge.failed", 1, 120.0),
        EventTypeSeen(stripe, "invoice.paid", 15, 100.0),  # last_seen never goes back
    ]
    await store.observations.count_types([EventTypeSeen(shop, "orders/create", 1, 60.0)])
    assert await store.observations.event_types(shop) == [EventTypeSeen(shop, "orders/create", 2, 60.0)]
    everything = await store.observations.event_types()
    assert {(e.origin, e.type) for e in everything} >= {(stripe, "invoice.paid"), (shop, "orders/create")}
    await store.observations.count_types([])  # nothing to do
