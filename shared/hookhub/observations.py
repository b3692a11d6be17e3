"""What the operator sees about inbound traffic without reading logs: the requests the hub
refused (per provider, with the reason, never a secret) and the event types each provider sends.

Both are counted in memory on the request path and written to the store every few seconds in one
batch, so neither costs ingest a store round trip. A crash loses at most the last interval of
these statistics, never an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from hookhub.clock import SYSTEM_CLOCK, Clock
from hookhub.events import Event
from hookhub.store.base import Observations, StoreUnavailable
from hookhub.store.records import EventTypeSeen, Rejection

log = logging.getLogger(__name__)

FLUSH_SECONDS = 2.0
MAX_PENDING_REJECTIONS = 5_000  # between two flushes; more are dropped (a flood says enough)
MAX_REASON_CHARS = 300
KEEP_PER_PROVIDER = 1_000


class Observer:
    def __init__(self, store: Observations, clock: Clock = SYSTEM_CLOCK) -> None:
        self.store = store
        self.clock = clock
        self._rejections: list[Rejection] = []
        self._types: dict[tuple[str, str], EventTypeSeen] = {}
        self._task: asyncio.Task[None] | None = None

    def rejected(self, origin: str, status: int, reason: str) -> None:
        """A refused request (4xx): its origin (provider or producer label), status and reason."""
        if status >= 500 or len(self._rejections) >= MAX_PENDING_REJECTIONS:
            return  # a 5xx is the hub's trouble, not the sender's
        self._rejections.append(Rejection(origin, self.clock.now(), status, reason[:MAX_REASON_CHARS]))

    def accepted(self, origin: str, events: Sequence[Event]) -> None:
        now = self.clock.now()
        for event in events:
            seen = self._types.get((origin, event.type))
            if seen is None:
                self._types[(origin, event.type)] = EventTypeSeen(origin, event.type, 1, now)
            else:
                seen.count += 1
                seen.last_seen = now

    async def flush(self) -> None:
        rejections, self._rejections = self._rejections, []
        types, self._types = self._types, {}
        try:
            if rejections:
                await self.store.record_rejections(rejections, keep_per_provider=KEEP_PER_PROVIDER)
            if types:
                await self.store.count_types(list(types.values()))
        except StoreUnavailable as exc:
            log.debug("observations not written this time: %s", exc)
            for seen in types.values():  # counts are kept for the next flush; rejections dropped
                self.accepted_seen(seen)

    def accepted_seen(self, seen: EventTypeSeen) -> None:
        current = self._types.get((seen.origin, seen.type))
        if current is None:
            self._types[(seen.origin, seen.type)] = seen
        else:
            current.count += seen.count
            current.last_seen = max(current.last_seen, seen.last_seen)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="hookhub-observations")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self.flush()
            except Exception:  # never let statistics kill the loop
                log.exception("writing observations failed")
