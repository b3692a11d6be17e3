"""The ingest claims: dedup, release, takeover of a stale claim, batching."""

from __future__ import annotations

import asyncio
import uuid

from hookhub.store import ClaimResult, SqlStore
from tests.store.factories import ingest


async def test_first_claim_owns_the_event_and_later_ones_see_it(store: SqlStore) -> None:
    r = ingest()
    assert await store.claims.claim([r]) == [ClaimResult.NEW]
    assert await store.claims.claim([r]) == [ClaimResult.IN_FLIGHT]  # pending: not yet confirmed
    await store.claims.settle([r.key])
    assert await store.claims.claim([r]) == [ClaimResult.DUPLICATE]
    stored = await store.claims.record(r.key)
    assert stored is not None and stored.status == "accepted"
    assert (stored.type, stored.origin, stored.correlation_id) == (r.type, r.origin, r.correlation_id)
    assert stored.received_at == r.received_at


async def test_released_claim_can_be_claimed_again(store: SqlStore) -> None:
    r = ingest()
    assert await store.claims.claim([r]) == [ClaimResult.NEW]
    await store.claims.release([r.key])
    assert await store.claims.record(r.key) is None
    assert await store.claims.claim([r]) == [ClaimResult.NEW]


async def test_release_never_drops_an_accepted_record(store: SqlStore) -> None:
    r = ingest()
    await store.claims.claim([r])
    await store.claims.settle([r.key])
    await store.claims.release([r.key])
    assert await store.claims.claim([r]) == [ClaimResult.DUPLICATE]


async def test_a_stale_pending_claim_is_taken_over_exactly_once(store: SqlStore) -> None:
    r = ingest()
    assert await store.claims.claim([r]) == [ClaimResult.NEW]
    store.claims.stale_after = 1.0  # the new owner's claim is fresh again for a second
    await asyncio.sleep(1.05)
    results = await asyncio.gather(*[store.claims.claim([r]) for _ in range(20)])
    assert sum(res == [ClaimResult.NEW] for res in results) == 1


async def test_concurrent_copies_yield_exactly_one_owner(store: SqlStore) -> None:
    keys = [ingest() for _ in range(50)]
    copies = [r for r in keys for _ in range(8)]
    batches_before = store.claims.writer.committer.batches
    results = await asyncio.gather(*[store.claims.claim([c]) for c in copies])
    owners = [c.key for c, res in zip(copies, results, strict=True) if res == [ClaimResult.NEW]]
    assert sorted(owners) == sorted(r.key for r in keys)
    assert store.claims.writer.committer.batches - batches_before < len(copies)  # grouped


async def test_twins_within_one_batch(store: SqlStore) -> None:
    r = ingest()
    assert await store.claims.claim([r, r, ingest()]) == [
        ClaimResult.NEW,
        ClaimResult.IN_FLIGHT,
        ClaimResult.NEW,
    ]


async def test_settle_and_claims_of_many_callers_share_a_batch(store: SqlStore) -> None:
    settled = ingest()
    await store.claims.claim([settled])
    fresh = [ingest() for _ in range(30)]
    results = await asyncio.gather(
        store.claims.settle([settled.key]), *[store.claims.claim([r]) for r in fresh]
    )
    assert results[1:] == [[ClaimResult.NEW]] * 30
    assert await store.claims.claim([settled]) == [ClaimResult.DUPLICATE]


async def test_large_batches_are_split_and_all_claimed(store: SqlStore) -> None:
    records = [ingest() for _ in range(1_200)]
    assert await store.claims.claim(records) == [ClaimResult.NEW] * 1_200
    await store.claims.settle([r.key for r in records])
    assert set(await store.claims.claim(records)) == {ClaimResult.DUPLICATE}


async def test_empty_calls_do_nothing(store: SqlStore) -> None:
    assert await store.claims.claim([]) == []
    await store.claims.settle([])
    await store.claims.release([])


async def test_records_by_correlation_id_oldest_first(store: SqlStore) -> None:
    correlation = uuid.uuid4().hex
    second = ingest(correlation=correlation)
    first = ingest(correlation=correlation, received_at=second.received_at - 5)
    await store.claims.claim([second, ingest(), first])
    found = await store.claims.by_correlation(correlation)
    assert [f.event_id for f in found] == [first.event_id, second.event_id]
    assert [f.event_id for f in await store.claims.by_correlation(correlation, limit=1)] == [first.event_id]
