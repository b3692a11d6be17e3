"""Subscription states: absent means active; paused and disabled survive a restart."""

from __future__ import annotations

from hookhub.store import SqlStore, SubscriptionState
from tests.store.factories import uid


async def test_states_default_to_active_and_round_trip(store: SqlStore) -> None:
    crm, shop = uid("crm"), uid("shop")
    states = await store.subscriptions.all()
    assert crm not in states and shop not in states  # absent means active
    await store.subscriptions.set(crm, SubscriptionState.PAUSED, "maintenance")
    await store.subscriptions.set(shop, SubscriptionState.DISABLED, "HTTP 410")
    states = await store.subscriptions.all()
    assert (states[crm], states[shop]) == (SubscriptionState.PAUSED, SubscriptionState.DISABLED)
    await store.subscriptions.set(crm, SubscriptionState.ACTIVE)
    states = await store.subscriptions.all()
    assert crm not in states and states[shop] is SubscriptionState.DISABLED
    assert SubscriptionState.ACTIVE not in states.values()


async def test_states_survive_a_new_store(store: SqlStore) -> None:
    name = uid("sub")
    await store.subscriptions.set(name, SubscriptionState.PAUSED)
    other = SqlStore(store.url)
    try:
        assert (await other.subscriptions.all())[name] is SubscriptionState.PAUSED
    finally:
        await other.close()


async def test_failing_since_is_kept_apart_from_the_state(store: SqlStore) -> None:
    failing, paused, gone = uid("crm"), uid("shop"), uid("old")
    await store.subscriptions.set_failing(failing, 1000.0)  # no row yet: it stays active
    await store.subscriptions.set(paused, SubscriptionState.PAUSED, "maintenance")
    await store.subscriptions.set_failing(paused, 2000.0)
    records = await store.subscriptions.records()
    assert (records[failing].state, records[failing].failing_since) == (SubscriptionState.ACTIVE, 1000.0)
    assert (records[paused].state, records[paused].reason, records[paused].failing_since) == (
        SubscriptionState.PAUSED,
        "maintenance",
        2000.0,
    )
    assert failing not in await store.subscriptions.all()  # a failing subscription is still active
    # a state change keeps failing_since; a success clears it
    await store.subscriptions.set(failing, SubscriptionState.DISABLED, "failing for 3 days")
    assert (await store.subscriptions.records())[failing].failing_since == 1000.0
    await store.subscriptions.set_failing(failing, None)
    records = await store.subscriptions.records()
    assert (records[failing].state, records[failing].failing_since) == (SubscriptionState.DISABLED, None)
    await store.subscriptions.set_failing(gone, None)  # clearing what was never set writes nothing
    assert gone not in await store.subscriptions.records()


async def test_forget_drops_the_row(store: SqlStore) -> None:
    name, other = uid("crm"), uid("shop")
    await store.subscriptions.set(name, SubscriptionState.PAUSED)
    await store.subscriptions.set(other, SubscriptionState.PAUSED)
    await store.subscriptions.forget(name)
    await store.subscriptions.forget(uid("never"))  # unknown: nothing to do
    records = await store.subscriptions.records()
    assert name not in records and other in records
    assert name not in await store.subscriptions.all()
