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
