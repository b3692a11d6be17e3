"""The delivery log part of the store contract, run against SQLite and PostgreSQL.

The PostgreSQL `test` database is shared with other tests and runs: every test uses ids of its
own and asserts only on the rows it wrote.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hookhub.store import SqlStore, StoreUnavailable
from hookhub.store.base import AttemptRecord, DeadLetter, SubscriptionState


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_sqlite_url: str) -> AsyncIterator[SqlStore]:
    url = tmp_sqlite_url if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store = SqlStore(url)
    await store.start()
    yield store
    await store.close()


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def attempt(
    n: int = 1,
    *,
    delivery_id: str | None = None,
    subscription: str = "crm",
    source: str = "/providers/test",
    event_id: str | None = None,
    at: float | None = None,
    **overrides: Any,
) -> AttemptRecord:
    fields: dict[str, Any] = {
        "delivery_id": delivery_id or uid("msg"),
        "subscription": subscription,
        "source": source,
        "event_id": event_id or uid("evt"),
        "event_type": "com.test.created",
        "correlation_id": "corr",
        "attempt": n,
        "attempted_at": time.time() if at is None else at,
        "status_code": 503,
        "latency_ms": 12.5,
        "error": "HTTP 503",
        "outcome": "retry",
    }
    fields.update(overrides)
    return AttemptRecord(**fields)


def letter(a: AttemptRecord, **overrides: Any) -> DeadLetter:
    fields: dict[str, Any] = {
        "delivery_id": a.delivery_id,
        "subscription": a.subscription,
        "source": a.source,
        "event_id": a.event_id,
        "event_type": a.event_type,
        "correlation_id": a.correlation_id,
        "attributes": {"id": a.event_id, "source": a.source, "type": a.event_type, "tenant": "acme"},
        "data": b'{"x": 1}\x00\xff binary',
        "attempts": a.attempt,
        "last_status": a.status_code,
        "last_error": a.error,
        "dead_at": a.attempted_at,
    }
    fields.update(overrides)
    return DeadLetter(**fields)


# Attempts ------------------------------------------------------------------------------------


async def test_attempts_are_logged_and_listed_oldest_first(store: SqlStore) -> None:
    event_id, t0 = uid("evt"), time.time()
    crm = uid("msg")
    records = [
        attempt(
            2, delivery_id=crm, event_id=event_id, at=t0 + 2, status_code=None, error="timeout after 10s"
        ),
        attempt(1, delivery_id=crm, event_id=event_id, at=t0 + 1),
        attempt(1, subscription="warehouse", event_id=event_id, at=t0 + 1.5, status_code=200, error=None),
        attempt(
            3, delivery_id=crm, event_id=event_id, at=t0 + 3, status_code=200, error=None, outcome="delivered"
        ),
    ]
    for record in records:
        await store.record_attempt(record)
    await store.record_attempt(attempt(event_id=uid("other")))  # another event: not listed
    listed = await store.attempts_for_event("/providers/test", event_id)
    assert listed == sorted(records, key=lambda r: r.attempted_at)  # every field round-trips
    assert [(r.subscription, r.attempt) for r in listed] == [
        ("crm", 1),
        ("warehouse", 1),
        ("crm", 2),
        ("crm", 3),
    ]
    assert await store.attempts_for_event("/providers/other", event_id) == []


async def test_attempt_count_per_delivery(store: SqlStore) -> None:
    delivery_id = uid("msg")
    assert await store.attempt_count(delivery_id) == 0
    for n in (1, 2, 3):
        await store.record_attempt(attempt(n, delivery_id=delivery_id))
    await store.record_attempt(attempt(1))  # another delivery
    assert await store.attempt_count(delivery_id) == 3


async def test_long_errors_are_truncated(store: SqlStore) -> None:
    record = attempt(subscription=uid("sub"), error="x" * 5_000)
    await store.record_attempt(record, letter(record, last_error="y" * 5_000))
    [stored] = await store.attempts_for_event(record.source, record.event_id)
    assert stored.error == "x" * 500
    [dead] = await store.dead_letters(record.subscription)
    assert dead.last_error == "y" * 500


# Dead letters --------------------------------------------------------------------------------


async def test_dead_letters_by_subscription_oldest_first_until_replayed(store: SqlStore) -> None:
    sub, other, t0 = uid("sub"), uid("sub"), time.time()
    first, second = attempt(8, subscription=sub, at=t0 + 1), attempt(1, subscription=sub, at=t0 + 2)
    elsewhere = attempt(8, subscription=other, at=t0)
    await store.record_attempt(second, letter(second, last_status=400, last_error="HTTP 400: bad"))
    await store.record_attempt(first, letter(first))
    await store.record_attempt(elsewhere, letter(elsewhere))
    await store.record_attempt(attempt(subscription=sub))  # an attempt without a dead letter

    listed = await store.dead_letters(sub)
    assert [d.delivery_id for d in listed] == [first.delivery_id, second.delivery_id]
    assert listed[0] == letter(first)  # every field round-trips, bytes and attributes included
    assert (listed[1].last_status, listed[1].last_error) == (400, "HTTP 400: bad")
    assert [d.delivery_id for d in await store.dead_letters(sub, limit=1)] == [first.delivery_id]

    assert await store.mark_replayed([first.delivery_id, first.delivery_id, "msg_unknown"]) == 1
    assert await store.mark_replayed([first.delivery_id]) == 0  # already replayed
    assert [d.delivery_id for d in await store.dead_letters(sub)] == [second.delivery_id]
    assert [d.delivery_id for d in await store.dead_letters(other)] == [elsewhere.delivery_id]


async def test_all_subscriptions_listing(store: SqlStore) -> None:
    if store.engine.dialect.name != "sqlite":
        assert len(await store.dead_letters(limit=3)) <= 3  # the shared database holds other runs' rows
        return
    t0 = time.time()
    a, b = attempt(subscription="a", at=t0 + 1), attempt(subscription="b", at=t0)
    await store.record_attempt(a, letter(a))
    await store.record_attempt(b, letter(b))
    assert [d.subscription for d in await store.dead_letters()] == ["b", "a"]


async def test_recording_a_dead_letter_twice_is_harmless(store: SqlStore) -> None:
    sub = uid("sub")
    record = attempt(8, subscription=sub)
    await store.record_attempt(record, letter(record))
    await store.record_attempt(record, letter(record))  # a redelivery after a crash
    assert [d.delivery_id for d in await store.dead_letters(sub)] == [record.delivery_id]
    assert await store.attempt_count(record.delivery_id) == 2  # the log keeps what happened


async def test_a_replayed_delivery_that_dies_again_is_listed_again(store: SqlStore) -> None:
    sub = uid("sub")
    record = attempt(8, subscription=sub)
    await store.record_attempt(record, letter(record))
    await store.mark_replayed([record.delivery_id])
    assert await store.dead_letters(sub) == []
    again = attempt(8, delivery_id=record.delivery_id, subscription=sub, event_id=record.event_id)
    await store.record_attempt(again, letter(again, last_status=500, attempts=16))
    [dead] = await store.dead_letters(sub)
    assert (dead.delivery_id, dead.attempts, dead.last_status, dead.replayed_at) == (
        record.delivery_id,
        16,
        500,
        None,
    )


# Subscription states -------------------------------------------------------------------------


async def test_states_default_to_active_and_round_trip(store: SqlStore) -> None:
    crm, shop = uid("crm"), uid("shop")
    states = await store.subscription_states()
    assert crm not in states and shop not in states  # absent means active
    await store.set_subscription_state(crm, SubscriptionState.PAUSED, "maintenance")
    await store.set_subscription_state(shop, SubscriptionState.DISABLED, "HTTP 410")
    states = await store.subscription_states()
    assert (states[crm], states[shop]) == (SubscriptionState.PAUSED, SubscriptionState.DISABLED)
    await store.set_subscription_state(crm, SubscriptionState.ACTIVE)
    states = await store.subscription_states()
    assert crm not in states and states[shop] is SubscriptionState.DISABLED


async def test_states_survive_a_new_store(store: SqlStore) -> None:
    name = uid("sub")
    await store.set_subscription_state(name, SubscriptionState.PAUSED)
    other = SqlStore(store.url)
    try:
        assert (await other.subscription_states())[name] is SubscriptionState.PAUSED
    finally:
        await other.close()


# Concurrency and durability ------------------------------------------------------------------


async def test_hundreds_of_concurrent_attempts_all_land_in_shared_transactions(store: SqlStore) -> None:
    event_id, sub = uid("evt"), uid("sub")
    records = [attempt(event_id=event_id, subscription=sub, at=time.time() + i / 1e4) for i in range(600)]
    dying = records[::50]
    batches_before = store._log_writes.batches
    await asyncio.gather(
        *[store.record_attempt(r, letter(r) if r in dying else None) for r in records],
    )
    listed = await store.attempts_for_event("/providers/test", event_id)
    assert {r.delivery_id for r in listed} == {r.delivery_id for r in records}
    assert len(listed) == 600
    assert {d.delivery_id for d in await store.dead_letters(sub, limit=1000)} == {
        d.delivery_id for d in dying
    }
    assert store._log_writes.batches - batches_before < 600  # grouped, not one commit each


async def test_only_dead_letters_wait_for_the_disk(store: SqlStore) -> None:
    """A batch with a dead letter commits synchronously (PostgreSQL: synchronous_commit on;
    SQLite: FULL), since its message is acked next; a plain attempt commits like the claims."""
    seen: list[str] = []
    log = store._log
    original = log.write

    def spying_write(cursor: Any, attempts: Any, dead: Any, *, durable: bool) -> None:
        original(cursor, attempts, dead, durable=durable)
        cursor.execute("SHOW synchronous_commit" if store._postgres else "PRAGMA synchronous")
        seen.append(str(cursor.fetchone()[0]))

    log.write = spying_write  # type: ignore[method-assign]
    try:
        await store.record_attempt(attempt())
        record = attempt()
        await store.record_attempt(record, letter(record))
    finally:
        del log.write
    assert seen == (["off", "on"] if store._postgres else ["1", "2"])  # 1 = NORMAL, 2 = FULL
    if store._postgres:  # and the ingest connections still default to off
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "off"


async def test_a_closed_store_reports_unavailable(store: SqlStore) -> None:
    other = SqlStore(store.url)
    await other.close()
    with pytest.raises(StoreUnavailable):
        await other.record_attempt(attempt())


async def test_an_unreachable_database_is_reported_as_unavailable() -> None:
    store = SqlStore("postgresql://nobody@127.0.0.1:1/none")
    try:
        with pytest.raises(StoreUnavailable):
            await store.record_attempt(attempt())
        with pytest.raises(StoreUnavailable):
            await store.attempt_count("msg_x")
    finally:
        await store.close()
