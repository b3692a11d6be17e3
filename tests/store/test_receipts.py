"""Pull receipts: acknowledged once, and only by the subscription they were issued to."""

from __future__ import annotations

import asyncio

from hookhub.store import PullReceipt, SqlStore
from tests.store.factories import uid


def receipt(subscription: str, issued_at: float = 1000.0) -> PullReceipt:
    return PullReceipt(uid("rcpt"), subscription, uid("msg"), 1, issued_at)


async def test_acknowledge_only_the_subscriptions_own_receipts(store: SqlStore) -> None:
    crm, shop = uid("crm"), uid("shop")
    mine = [receipt(crm) for _ in range(3)]
    theirs = receipt(shop)
    await store.receipts.issue([*mine, theirs])
    assert await store.receipts.get(mine[0].receipt) == mine[0]
    acked = await store.receipts.acknowledge(
        crm, [mine[1].receipt, theirs.receipt, "rcpt-unknown", mine[0].receipt, mine[1].receipt]
    )
    assert [r.receipt for r in acked] == [mine[1].receipt, mine[0].receipt]  # in the caller's order
    assert all(r.acked_at is not None and r.subscription == crm for r in acked)
    assert (await store.receipts.get(theirs.receipt)).acked_at is None  # type: ignore[union-attr]
    assert (await store.receipts.get(mine[2].receipt)).acked_at is None  # type: ignore[union-attr]
    assert await store.receipts.acknowledge(crm, [mine[0].receipt]) == []  # once only
    assert [r.receipt for r in await store.receipts.acknowledge(shop, [theirs.receipt])] == [theirs.receipt]
    assert await store.receipts.acknowledge(crm, []) == []
    assert await store.receipts.get("rcpt-unknown") is None


async def test_concurrent_acks_settle_a_receipt_once(store: SqlStore) -> None:
    crm = uid("crm")
    issued = [receipt(crm) for _ in range(20)]
    await store.receipts.issue(issued)
    ids = [r.receipt for r in issued]
    results = await asyncio.gather(*[store.receipts.acknowledge(crm, ids) for _ in range(4)])
    settled = [r.receipt for result in results for r in result]
    assert sorted(settled) == sorted(ids)


async def test_forget_drops_old_receipts(store: SqlStore) -> None:
    crm = uid("crm")
    old, new = receipt(crm, issued_at=100.0), receipt(crm, issued_at=4_000_000_000.0)
    await store.receipts.issue([old, new])
    assert await store.receipts.forget(before=200.0) >= 1
    assert await store.receipts.get(old.receipt) is None
    assert await store.receipts.get(new.receipt) == new
