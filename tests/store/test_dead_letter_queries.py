"""Dead letters as an operator sees them: filtered, paged by a keyset cursor that never repeats
or skips a row (even among equal `dead_at`), purged by selector or by id, counted; and the
attempt trail of one delivery or one event id."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random

from hookhub.store import DeadLetter, DeadLetterQuery, SqlStore
from tests.store.factories import attempt, ingest, letter, uid

BASE = 1_700_000_000.0


async def seed(
    store: SqlStore, subscription: str, n: int, types: list[str], seed: int = 7
) -> list[DeadLetter]:
    """`n` dead letters with many equal `dead_at` values (ties the cursor must break)."""
    rng = random.Random(seed)
    final = [
        attempt(
            5,
            subscription=subscription,
            at=BASE + rng.randrange(8),
            verdict="dead",
            event_type=rng.choice(types),
        )
        for _ in range(n)
    ]
    letters = [letter(a) for a in final]
    await asyncio.gather(*[store.attempts.record(a, d) for a, d in zip(final, letters, strict=True)])
    return letters


async def pages(store: SqlStore, query: DeadLetterQuery) -> list[list[str]]:
    """Walk every page of `query`, as the admin API's cursor does."""
    walked: list[list[str]] = []
    while True:
        page = await store.attempts.find_dead_letters(query)
        if not page:
            return walked
        walked.append([d.delivery_id for d in page])
        assert len(page) <= query.limit
        query.after = (page[-1].dead_at, page[-1].delivery_id)


def expected(letters: list[DeadLetter], query: DeadLetterQuery) -> list[str]:
    chosen = [
        d
        for d in letters
        if (query.type is None or d.event_type == query.type)
        and (query.since is None or d.dead_at >= query.since)
        and (query.until is None or d.dead_at < query.until)
    ]
    return [d.delivery_id for d in sorted(chosen, key=lambda d: (d.dead_at, d.delivery_id))]


async def test_keyset_pages_never_repeat_or_skip_a_row(store: SqlStore) -> None:
    sub, other = uid("crm"), uid("shop")
    types = [uid("t.created"), uid("t.deleted")]
    letters = await seed(store, sub, 40, types)
    await seed(store, other, 5, types, seed=8)  # another subscription's: never listed
    combos = itertools.product([None, *types], [None, BASE + 2], [None, BASE + 6], [1, 3, 7, 100])
    for type_, since, until, limit in combos:
        query = DeadLetterQuery(subscription=sub, type=type_, since=since, until=until, limit=limit)
        walked = await pages(store, dataclasses.replace(query))
        flat = [i for page in walked for i in page]
        assert flat == expected(letters, query), (type_, since, until, limit)
        assert all(len(page) == limit for page in walked[:-1])


async def test_pages_skip_replayed_letters_and_select_by_id(store: SqlStore) -> None:
    sub = uid("crm")
    letters = await seed(store, sub, 6, [uid("t")])
    ordered = sorted(letters, key=lambda d: (d.dead_at, d.delivery_id))
    assert await store.attempts.mark_replayed([ordered[0].delivery_id]) == 1
    found = await store.attempts.find_dead_letters(DeadLetterQuery(subscription=sub))
    assert [d.delivery_id for d in found] == [d.delivery_id for d in ordered[1:]]
    by_id = await store.attempts.find_dead_letters(
        DeadLetterQuery(delivery_ids=[ordered[0].delivery_id, ordered[3].delivery_id, "msg_unknown"])
    )
    assert [d.delivery_id for d in by_id] == [ordered[3].delivery_id]  # the replayed one is not listed
    assert await store.attempts.find_dead_letters(DeadLetterQuery(delivery_ids=[])) == []
    # still readable one by one, with its replay time
    one = await store.attempts.dead_letter(ordered[0].delivery_id)
    assert one is not None and one.replayed_at is not None and one.data == ordered[0].data
    assert await store.attempts.dead_letter("msg_unknown") is None


async def test_many_ids_select_across_statement_chunks(store: SqlStore) -> None:
    sub = uid("crm")
    letters = await seed(store, sub, 30, [uid("t")])
    ids = [d.delivery_id for d in letters] + [uid("msg") for _ in range(1200)]  # > one chunk
    found = await store.attempts.find_dead_letters(DeadLetterQuery(delivery_ids=ids, limit=10))
    assert [d.delivery_id for d in found] == expected(letters, DeadLetterQuery())[:10]


async def test_purge_by_selector_and_by_ids(store: SqlStore) -> None:
    sub = uid("crm")
    keep_type, drop_type = uid("t.keep"), uid("t.drop")
    letters = await seed(store, sub, 20, [keep_type, drop_type])
    dropped = [d for d in letters if d.event_type == drop_type and d.dead_at < BASE + 5]
    replayed = dropped[0]
    await store.attempts.mark_replayed([replayed.delivery_id])  # purged too: replayed or not
    purged = await store.attempts.purge_dead_letters(
        DeadLetterQuery(subscription=sub, type=drop_type, until=BASE + 5, limit=1, after=(0.0, ""))
    )
    assert purged == len(dropped)  # neither the cursor nor the limit narrows a purge
    assert await store.attempts.dead_letter(replayed.delivery_id) is None
    left = {d.delivery_id for d in await store.attempts.find_dead_letters(DeadLetterQuery(subscription=sub))}
    assert left == {d.delivery_id for d in letters} - {d.delivery_id for d in dropped}
    two = sorted(left)[:2]
    assert await store.attempts.purge_dead_letters(DeadLetterQuery(delivery_ids=[*two, "msg_unknown"])) == 2
    assert await store.attempts.purge_dead_letters(DeadLetterQuery(delivery_ids=two)) == 0
    assert await store.attempts.purge_dead_letters(DeadLetterQuery(delivery_ids=[])) == 0
    counts = await store.attempts.dead_letter_counts()
    assert counts[sub] == len(left) - 2


async def test_counts_are_per_subscription_and_skip_replayed(store: SqlStore) -> None:
    crm, shop, empty = uid("crm"), uid("shop"), uid("none")
    crm_letters = await seed(store, crm, 4, ["t"])
    await seed(store, shop, 2, ["t"])
    await store.attempts.mark_replayed([crm_letters[0].delivery_id])
    counts = await store.attempts.dead_letter_counts()
    assert (counts[crm], counts[shop]) == (3, 2)
    assert empty not in counts


async def test_for_delivery_lists_its_attempts_oldest_first(store: SqlStore) -> None:
    delivery_id = uid("msg")
    mine = [attempt(n, delivery_id=delivery_id, at=BASE + 10 - n) for n in (3, 1, 2)]
    for a in mine:
        await store.attempts.record(a)
    await store.attempts.record(attempt(1))  # another delivery
    found = await store.attempts.for_delivery(delivery_id)
    assert [a.attempt for a in found] == [3, 2, 1]  # by attempted_at
    assert await store.attempts.for_delivery(uid("msg")) == []


async def test_by_event_id_finds_every_source(store: SqlStore) -> None:
    event_id = uid("evt")
    first = ingest(event_id, source="/providers/a", received_at=BASE + 2)
    second = ingest(event_id, source="/providers/b", received_at=BASE + 1)
    await store.claims.claim([first, second, ingest()])
    found = await store.claims.by_event_id(event_id)
    assert [r.source for r in found] == ["/providers/b", "/providers/a"]
    assert [r.source for r in await store.claims.by_event_id(event_id, limit=1)] == ["/providers/b"]
    assert await store.claims.by_event_id(uid("evt")) == []
