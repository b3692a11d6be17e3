"""The attempt log, its dead letters, and the delivery state read back from it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from hookhub.store import DeliveryState, SqlStore
from tests.store.factories import attempt, letter, uid

# Attempts ------------------------------------------------------------------------------------


async def test_attempts_round_trip_and_list_oldest_first(store: SqlStore) -> None:
    event_id, t0 = uid("evt"), time.time()
    crm = uid("msg")
    records = [
        attempt(2, delivery_id=crm, event_id=event_id, at=t0 + 2, status_code=None, error="timeout"),
        attempt(1, delivery_id=crm, event_id=event_id, at=t0 + 1),
        attempt(
            1,
            subscription="warehouse",
            event_id=event_id,
            at=t0 + 1.5,
            status_code=None,
            error=None,
            verdict="parked",
            next_attempt_at=None,
        ),
        attempt(
            3,
            delivery_id=crm,
            event_id=event_id,
            at=t0 + 3,
            status_code=200,
            error=None,
            verdict="delivered",
            next_attempt_at=None,
        ),
    ]
    for record in records:
        await store.attempts.record(record)
    await store.attempts.record(attempt(event_id=uid("other")))  # another event: not listed
    listed = await store.attempts.for_event("/providers/test", event_id)
    assert listed == sorted(records, key=lambda r: r.attempted_at)  # every field, verdict included
    assert [(r.verdict, r.next_attempt_at) for r in listed] == [
        ("retry", t0 + 1 + 30),
        ("parked", None),
        ("retry", t0 + 2 + 30),
        ("delivered", None),
    ]
    assert await store.attempts.for_event("/providers/other", event_id) == []


async def test_delivery_state_counts_attempts_and_reads_the_last_retry(store: SqlStore) -> None:
    delivery_id, t0 = uid("msg"), time.time()
    assert await store.attempts.delivery_state(delivery_id) == DeliveryState(0, None)
    await store.attempts.record(attempt(1, delivery_id=delivery_id, at=t0, next_attempt_at=t0 + 10))
    assert await store.attempts.delivery_state(delivery_id) == DeliveryState(1, t0 + 10)
    # logged out of order: the state follows the latest attempt, not the last write
    await store.attempts.record(attempt(3, delivery_id=delivery_id, at=t0 + 50, next_attempt_at=t0 + 90))
    await store.attempts.record(attempt(2, delivery_id=delivery_id, at=t0 + 20, next_attempt_at=t0 + 40))
    await store.attempts.record(attempt(1))  # another delivery
    assert await store.attempts.delivery_state(delivery_id) == DeliveryState(3, t0 + 90)


async def test_delivery_state_has_no_due_time_after_a_final_verdict(store: SqlStore) -> None:
    for verdict in ("delivered", "dead", "parked"):
        delivery_id, t0 = uid("msg"), time.time()
        await store.attempts.record(attempt(1, delivery_id=delivery_id, at=t0))
        # a stray due time on a final verdict does not make the delivery look pending
        await store.attempts.record(
            attempt(2, delivery_id=delivery_id, at=t0 + 1, verdict=verdict, next_attempt_at=t0 + 99)
        )
        assert await store.attempts.delivery_state(delivery_id) == DeliveryState(2, None), verdict


async def test_long_errors_are_truncated(store: SqlStore) -> None:
    record = attempt(subscription=uid("sub"), error="x" * 5_000)
    await store.attempts.record(record, letter(record, last_error="y" * 5_000))
    [stored] = await store.attempts.for_event(record.source, record.event_id)
    assert stored.error == "x" * 500
    [dead] = await store.attempts.dead_letters(record.subscription)
    assert dead.last_error == "y" * 500


# Dead letters --------------------------------------------------------------------------------


async def test_dead_letters_by_subscription_oldest_first_until_replayed(store: SqlStore) -> None:
    sub, other, t0 = uid("sub"), uid("sub"), time.time()
    first, second = attempt(8, subscription=sub, at=t0 + 1), attempt(1, subscription=sub, at=t0 + 2)
    elsewhere = attempt(8, subscription=other, at=t0)
    await store.attempts.record(second, letter(second, last_status=400, last_error="HTTP 400: bad"))
    await store.attempts.record(first, letter(first))
    await store.attempts.record(elsewhere, letter(elsewhere))
    await store.attempts.record(attempt(subscription=sub))  # an attempt without a dead letter

    listed = await store.attempts.dead_letters(sub)
    assert [d.delivery_id for d in listed] == [first.delivery_id, second.delivery_id]
    assert listed[0] == letter(first)  # every field round-trips, bytes and attributes included
    assert (listed[1].last_status, listed[1].last_error) == (400, "HTTP 400: bad")
    assert [d.delivery_id for d in await store.attempts.dead_letters(sub, limit=1)] == [first.delivery_id]

    assert await store.attempts.mark_replayed([first.delivery_id, first.delivery_id, "msg_unknown"]) == 1
    assert await store.attempts.mark_replayed([first.delivery_id]) == 0  # already replayed
    assert [d.delivery_id for d in await store.attempts.dead_letters(sub)] == [second.delivery_id]
    assert [d.delivery_id for d in await store.attempts.dead_letters(other)] == [elsewhere.delivery_id]


async def test_all_subscriptions_listing(store: SqlStore) -> None:
    if store.db.postgres:
        assert len(await store.attempts.dead_letters(limit=3)) <= 3  # the shared database holds other rows
        return
    t0 = time.time()
    a, b = attempt(subscription="a", at=t0 + 1), attempt(subscription="b", at=t0)
    await store.attempts.record(a, letter(a))
    await store.attempts.record(b, letter(b))
    assert [d.subscription for d in await store.attempts.dead_letters()] == ["b", "a"]


async def test_recording_a_dead_letter_twice_is_harmless(store: SqlStore) -> None:
    sub = uid("sub")
    record = attempt(8, subscription=sub, verdict="dead", next_attempt_at=None)
    await store.attempts.record(record, letter(record))
    await store.attempts.record(record, letter(record))  # a redelivery after a crash
    assert [d.delivery_id for d in await store.attempts.dead_letters(sub)] == [record.delivery_id]
    assert (await store.attempts.delivery_state(record.delivery_id)).attempts == 2  # the log keeps both


async def test_a_replayed_delivery_that_dies_again_is_listed_again(store: SqlStore) -> None:
    sub = uid("sub")
    record = attempt(8, subscription=sub)
    await store.attempts.record(record, letter(record))
    await store.attempts.mark_replayed([record.delivery_id])
    assert await store.attempts.dead_letters(sub) == []
    again = attempt(8, delivery_id=record.delivery_id, subscription=sub, event_id=record.event_id)
    await store.attempts.record(again, letter(again, last_status=500, attempts=16))
    [dead] = await store.attempts.dead_letters(sub)
    assert (dead.delivery_id, dead.attempts, dead.last_status, dead.replayed_at) == (
        record.delivery_id,
        16,
        500,
        None,
    )


# Concurrency and durability ------------------------------------------------------------------


async def test_hundreds_of_concurrent_attempts_share_transactions(store: SqlStore) -> None:
    event_id, sub = uid("evt"), uid("sub")
    records = [attempt(event_id=event_id, subscription=sub, at=time.time() + i / 1e4) for i in range(600)]
    dying = records[::50]
    batches_before = store.attempts.writer.committer.batches
    await asyncio.gather(*[store.attempts.record(r, letter(r) if r in dying else None) for r in records])
    listed = await store.attempts.for_event("/providers/test", event_id)
    assert sorted(r.delivery_id for r in listed) == sorted(r.delivery_id for r in records)
    assert {d.delivery_id for d in await store.attempts.dead_letters(sub, limit=1000)} == {
        d.delivery_id for d in dying
    }
    assert store.attempts.writer.committer.batches - batches_before < 600  # grouped, not one commit each


async def test_only_dead_letters_wait_for_the_disk(store: SqlStore) -> None:
    """A batch with a dead letter commits synchronously (PostgreSQL: synchronous_commit on;
    SQLite: FULL), since its message is acked next; a plain attempt commits like the claims."""
    seen: list[str] = []
    path = store.attempts._path
    original = path.write

    def spying_write(cursor: Any, attempts: Any, dead: Any, *, durable: bool) -> None:
        original(cursor, attempts, dead, durable=durable)
        cursor.execute("SHOW synchronous_commit" if store.db.postgres else "PRAGMA synchronous")
        seen.append(str(cursor.fetchone()[0]))

    path.write = spying_write  # type: ignore[method-assign]
    try:
        await store.attempts.record(attempt())
        record = attempt()
        await store.attempts.record(record, letter(record))
    finally:
        del path.write
    assert seen == (["off", "on"] if store.db.postgres else ["1", "2"])  # 1 = NORMAL, 2 = FULL
    if store.db.postgres:  # and the claims' connections still default to off
        with store.db.engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "off"
