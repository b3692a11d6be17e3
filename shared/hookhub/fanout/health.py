"""Since when each subscription has failed without a single success: after its `disable_after`
the decision path disables it, as a 410 does (Svix disables an endpoint failing for 5 days).

The store holds `failing_since` so every process (replicas, a restart) agrees on it; this cache
writes only on a transition (first failure, first success after failures), never per attempt.
"""

from __future__ import annotations

import logging

from hookhub.store.base import StoreUnavailable, SubscriptionStates

log = logging.getLogger(__name__)


class Health:
    def __init__(self, states: SubscriptionStates) -> None:
        self.states = states
        self._since: dict[str, float | None] = {}
        self._loaded = False

    async def _load(self) -> None:
        if self._loaded:
            return
        try:
            records = await self.states.records()
        except StoreUnavailable as exc:  # try again on the next outcome
            log.debug("cannot read failing-since marks yet: %s", exc)
            return
        for name, record in records.items():
            self._since.setdefault(name, record.failing_since)
        self._loaded = True

    def forget(self, name: str) -> None:
        """Resumed or deleted: the next failure starts a new period."""
        self._since.pop(name, None)

    async def succeeded(self, name: str) -> None:
        await self._load()
        if self._since.get(name) is not None:
            self._since[name] = None
            await self.states.set_failing(name, None)

    async def confirm(self, name: str, at: float) -> float:
        """`failed`, after re-reading the store: a resume elsewhere (another replica, the admin
        API) clears the mark there, and this cache must not disable on a stale one."""
        self._loaded = False
        self._since.pop(name, None)
        return await self.failed(name, at)

    async def failed(self, name: str, at: float) -> float:
        """Since when `name` has been failing (now `at` if this is the first failure)."""
        await self._load()
        since = self._since.get(name)
        if since is None:
            self._since[name] = since = at
            await self.states.set_failing(name, at)
        return since
