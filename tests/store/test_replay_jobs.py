"""Replay jobs shared by replicas: each job runs under exactly one owner, a stale one is taken
over, a cancel stops its runner at the next save. Claims see every job in the table, so these
tests run on a database of their own."""

from __future__ import annotations

import asyncio
import time
import uuid

from hookhub.store import ReplayJob, SqlStore
from tests.store.factories import uid


def job(subscription: str = "crm", created_at: float | None = None) -> ReplayJob:
    now = time.time() if created_at is None else created_at
    return ReplayJob(
        id=uuid.uuid4().hex,
        subscription=subscription,
        start=1000.0,
        end=2000.0,
        state="queued",
        created_at=now,
        updated_at=now,
    )


async def test_create_get_and_list_newest_first(private_store: SqlStore) -> None:
    jobs = private_store.jobs
    crm = [job("crm", created_at=100.0 + i) for i in range(3)]
    shop = job("shop", created_at=50.0)
    for j in [*crm, shop]:
        await jobs.create(j)
    assert await jobs.get(crm[0].id) == crm[0]
    assert await jobs.get(uuid.uuid4().hex) is None
    assert [j.id for j in await jobs.list("crm")] == [j.id for j in reversed(crm)]
    assert [j.id for j in await jobs.list()] == [*(j.id for j in reversed(crm)), shop.id]
    assert [j.id for j in await jobs.list(limit=2)] == [crm[2].id, crm[1].id]


async def test_claim_takes_the_oldest_queued_job_and_runs_it(private_store: SqlStore) -> None:
    jobs = private_store.jobs
    assert await jobs.claim("replica-a", stale_after=60) is None  # nothing queued
    older, newer = job(created_at=10.0), job(created_at=20.0)
    await jobs.create(newer)
    await jobs.create(older)
    claimed = await jobs.claim("replica-a", stale_after=60)
    assert claimed is not None and claimed.id == older.id
    assert (claimed.state, claimed.owner) == ("running", "replica-a")
    assert claimed.heartbeat_at is not None and claimed.heartbeat_at >= claimed.created_at
    assert await jobs.save_progress(older.id, scanned=10, sent=4, cursor="k1#9", owner="replica-a")
    assert await jobs.save_progress(older.id, scanned=10, sent=4, cursor="x", owner="replica-b") is False
    got = await jobs.get(older.id)
    assert got is not None and (got.scanned, got.sent, got.cursor) == (10, 4, "k1#9")
    await jobs.finish(older.id, "done")
    got = await jobs.get(older.id)
    assert got is not None and got.state == "done" and got.finished_at is not None
    assert await jobs.save_progress(older.id, scanned=11, sent=4, cursor=None, owner="replica-a") is False
    second = await jobs.claim("replica-a", stale_after=60)
    assert second is not None and second.id == newer.id
    assert await jobs.claim("replica-a", stale_after=60) is None  # running, heartbeat fresh


async def test_concurrent_claims_give_each_job_to_exactly_one_owner(private_url: str) -> None:
    replicas = [SqlStore(private_url) for _ in range(4)]  # engines of their own, as processes have
    try:
        await replicas[0].start()
        created = [job(created_at=float(i)) for i in range(6)]
        for j in created:
            await replicas[0].jobs.create(j)

        async def drain(store: SqlStore, owner: str) -> list[str]:
            won = []
            while (claimed := await store.jobs.claim(owner, stale_after=60)) is not None:
                assert claimed.owner == owner
                won.append(claimed.id)
            return won

        results = await asyncio.gather(*[drain(s, f"owner-{i}") for i, s in enumerate(replicas)])
        won = [job_id for ids in results for job_id in ids]
        assert sorted(won) == sorted(j.id for j in created)  # each exactly once
        for i, ids in enumerate(results):
            for job_id in ids:
                got = await replicas[0].jobs.get(job_id)
                assert got is not None and got.owner == f"owner-{i}"
    finally:
        for store in replicas:
            await store.close()


async def test_two_owners_racing_for_one_job(private_url: str) -> None:
    a, b = SqlStore(private_url), SqlStore(private_url)
    try:
        await a.start()
        for _ in range(5):
            await a.jobs.create(job())
            got = await asyncio.gather(a.jobs.claim("a", stale_after=60), b.jobs.claim("b", stale_after=60))
            assert len([g for g in got if g is not None]) == 1, got
    finally:
        await a.close()
        await b.close()


async def test_a_stale_heartbeat_lets_another_owner_take_over(private_store: SqlStore) -> None:
    jobs = private_store.jobs
    queued = job()
    await jobs.create(queued)
    assert await jobs.claim("dead-replica", stale_after=60) is not None
    assert await jobs.claim("replica-b", stale_after=60) is None
    await asyncio.sleep(0.2)
    taken = await jobs.claim("replica-b", stale_after=0.1)  # no heartbeat for longer than that
    assert taken is not None and taken.id == queued.id and taken.owner == "replica-b"
    # the old owner learns it lost the job at its next save; the new one resumes
    assert await jobs.save_progress(queued.id, scanned=5, sent=5, cursor="c", owner="dead-replica") is False
    assert await jobs.save_progress(queued.id, scanned=5, sent=5, cursor="c", owner="replica-b") is True


async def test_cancel_stops_the_runner(private_store: SqlStore) -> None:
    jobs = private_store.jobs
    running, queued = job(created_at=1.0), job(created_at=2.0)
    await jobs.create(running)
    await jobs.create(queued)
    assert (await jobs.claim("a", stale_after=60)).id == running.id  # type: ignore[union-attr]
    cancelled = await jobs.cancel(running.id)
    assert cancelled is not None and cancelled.state == "cancelled" and cancelled.finished_at is not None
    assert await jobs.save_progress(running.id, scanned=1, sent=1, cursor=None, owner="a") is False
    await jobs.finish(running.id, "done")  # the runner's last word does not undo the cancel
    assert (await jobs.get(running.id)).state == "cancelled"  # type: ignore[union-attr]
    assert (await jobs.cancel(queued.id)).state == "cancelled"  # type: ignore[union-attr]
    assert await jobs.claim("b", stale_after=0) is None  # neither is claimable any more
    assert await jobs.cancel(uuid.uuid4().hex) is None
    done = job()
    await jobs.create(done)
    await jobs.claim("a", stale_after=60)
    await jobs.finish(done.id, "failed", error="archive unreachable: " + "x" * 2000)
    after = await jobs.cancel(done.id)  # finished: stays as it ended
    assert after is not None and after.state == "failed" and after.error is not None
    assert after.error.startswith("archive unreachable") and len(after.error) <= 500


async def test_jobs_of_a_subscription_only(private_store: SqlStore) -> None:
    name = uid("crm")
    await private_store.jobs.create(job(name))
    await private_store.jobs.create(job(uid("shop")))
    assert [j.subscription for j in await private_store.jobs.list(name)] == [name]
