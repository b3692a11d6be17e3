"""A value the database refuses (NUL, over-long, unencodable) fails its own call with
StoreRejected, a 4xx for the admin API, never a crash; the store keeps working."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import pytest

from hookhub.store import (
    DeadLetterQuery,
    EventTypeSeen,
    PullReceipt,
    Rejection,
    ReplayJob,
    SqlStore,
    StoredSubscription,
    StoreRejected,
)
from tests.store.factories import uid
from tests.store.test_failures import refused_values

# where a long string is fine: a text column, or a value only compared with
UNBOUNDED = {"catalog.update secret", "jobs.save_progress", "jobs.finish", "rejection reason", "purge"}


def writes(store: SqlStore, value: str) -> dict[str, Callable[[], Awaitable[object]]]:
    """Every new write, with `value` where a caller's string goes."""
    job = ReplayJob(uuid.uuid4().hex, value, 1.0, 2.0, "queued", 1.0, 1.0)
    return {
        "catalog.create": lambda: store.catalog.create(StoredSubscription(value, {}, 1.0, 1.0)),
        "catalog.update secret": lambda: store.catalog.update(
            StoredSubscription(uid("crm"), {}, 1.0, 1.0, previous_secret=value)
        ),
        "jobs.create": lambda: store.jobs.create(job),
        "jobs.save_progress": lambda: store.jobs.save_progress(
            uuid.uuid4().hex, scanned=1, sent=1, cursor=value, owner="a"
        ),
        "jobs.finish": lambda: store.jobs.finish(uuid.uuid4().hex, "failed", error=value),
        "states.set_failing": lambda: store.subscriptions.set_failing(value, 1.0),
        "rejections": lambda: store.observations.record_rejections([Rejection(value, 1.0, 401, "x")]),
        "rejection reason": lambda: store.observations.record_rejections(
            [Rejection(uid("p"), 1.0, 401, value)]
        ),
        "count_types": lambda: store.observations.count_types([EventTypeSeen(uid("o"), value, 1, 1.0)]),
        "receipts.issue": lambda: store.receipts.issue([PullReceipt(uid("r"), value, "msg", 1, 1.0)]),
        "purge": lambda: store.attempts.purge_dead_letters(DeadLetterQuery(subscription=value)),
    }


async def test_refused_values_are_rejected(store: SqlStore) -> None:
    for value in refused_values(store):
        for name, call in writes(store, value).items():
            if len(value) > 255 and name in UNBOUNDED:
                continue
            with pytest.raises(StoreRejected):
                await call()
                pytest.fail(f"{name} accepted {value!r}")
    sub = StoredSubscription(uid("crm"), {"note": "nul \x00 and \ud800 stay JSON escapes"}, 1.0, 1.0)
    assert await store.catalog.create(sub)  # the store still works, and JSON escapes what it must
    assert await store.catalog.get(sub.name) == sub


async def test_refused_reads_are_rejected(store: SqlStore) -> None:
    for value in refused_values(store):
        if len(value) > 255:
            continue  # a long value just matches nothing
        with pytest.raises(StoreRejected):
            await store.catalog.get(value)
        with pytest.raises(StoreRejected):
            await store.attempts.find_dead_letters(DeadLetterQuery(type=value))
        with pytest.raises(StoreRejected):
            await store.receipts.acknowledge("crm", [value])
