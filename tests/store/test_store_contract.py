"""One contract for the store, run against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from hookhub.store import ClaimResult, IngestRecord, SqlStore


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_sqlite_url: str) -> AsyncIterator[SqlStore]:
    url = tmp_sqlite_url if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store = SqlStore(url)
    await store.start()
    yield store
    await store.close()


def record(event_id: str | None = None, correlation: str | None = None) -> IngestRecord:
    event_id = event_id or uuid.uuid4().hex
    return IngestRecord(
        "/providers/test", event_id, "com.test.created", "test", correlation or event_id, time.time()
    )


async def test_first_claim_owns_the_event_and_later_ones_see_it(store: SqlStore) -> None:
    r = record()
    assert await store.claim([r]) == [ClaimResult.NEW]
    assert await store.claim([r]) == [ClaimResult.IN_FLIGHT]  # pending: not yet confirmed
    await store.settle([r.key])
    assert await store.claim([r]) == [ClaimResult.DUPLICATE]
    stored = await store.ingest_record(r.key)
    assert stored is not None and stored.status == "accepted" and stored.type == "com.test.created"


async def test_released_claim_can_be_claimed_again(store: SqlStore) -> None:
    r = record()
    assert await store.claim([r]) == [ClaimResult.NEW]
    await store.release([r.key])
    assert await store.ingest_record(r.key) is None
    assert await store.claim([r]) == [ClaimResult.NEW]


async def test_release_never_drops_an_accepted_record(store: SqlStore) -> None:
    r = record()
    await store.claim([r])
    await store.settle([r.key])
    await store.release([r.key])
    assert await store.claim([r]) == [ClaimResult.DUPLICATE]


async def test_a_stale_pending_claim_is_taken_over_exactly_once(store: SqlStore) -> None:
    r = record()
    assert await store.claim([r]) == [ClaimResult.NEW]
    store.stale_after = 1.0  # the new owner's claim is fresh again for a second
    await asyncio.sleep(1.05)
    results = await asyncio.gather(*[store.claim([r]) for _ in range(20)])
    assert sum(res == [ClaimResult.NEW] for res in results) == 1


async def test_concurrent_copies_yield_exactly_one_owner(store: SqlStore) -> None:
    keys = [record() for _ in range(50)]
    copies = [r for r in keys for _ in range(8)]
    results = await asyncio.gather(*[store.claim([c]) for c in copies])
    owners = [c.key for c, res in zip(copies, results, strict=True) if res == [ClaimResult.NEW]]
    assert sorted(owners) == sorted(r.key for r in keys)


async def test_twins_within_one_batch(store: SqlStore) -> None:
    r = record()
    assert await store.claim([r, r, record()]) == [ClaimResult.NEW, ClaimResult.IN_FLIGHT, ClaimResult.NEW]


async def test_large_batches_are_split_and_all_claimed(store: SqlStore) -> None:
    records = [record() for _ in range(1_200)]
    assert await store.claim(records) == [ClaimResult.NEW] * 1_200
    await store.settle([r.key for r in records])
    assert set(await store.claim(records)) == {ClaimResult.DUPLICATE}


async def test_records_by_correlation_id(store: SqlStore) -> None:
    correlation = uuid.uuid4().hex
    first, second = record(correlation=correlation), record(correlation=correlation)
    await store.claim([first, record(), second])
    found = await store.records_by_correlation(correlation)
    assert {f.event_id for f in found} == {first.event_id, second.event_id}


async def test_ping(store: SqlStore) -> None:
    assert await store.ping() is True


async def test_unreachable_postgres_is_reported_not_raised() -> None:
    store = SqlStore("postgresql://nobody@127.0.0.1:1/none")
    assert await store.ping() is False
    from hookhub.store import StoreUnavailable

    with pytest.raises(StoreUnavailable):
        await store.start()
    await store.close()
