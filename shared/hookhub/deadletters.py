"""Dead-letter operations: replay through the normal retry path, and purge.

A replayed dead letter is put back on its subscription's queue as a fresh attempt 1 and only then
marked replayed, so a crash in between can duplicate a delivery, never lose one. From there the
dispatcher treats it like any other event: delivered, retried, or dead again under the same
delivery id (which lists it again).

Replay works in pages, so "every dead letter of a subscription" runs in constant memory however
many there are. It only takes dead letters that died before the replay began: one that dies again
while the replay still runs is left for the next replay instead of looping.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter
from collections.abc import Callable

from hookhub.broker.base import Broker
from hookhub.clock import SYSTEM_CLOCK, Clock
from hookhub.errors import InvalidEvent
from hookhub.events import Event
from hookhub.store.base import AttemptLog
from hookhub.store.records import DeadLetter, DeadLetterQuery

log = logging.getLogger(__name__)

PAGE_SIZE = 500  # dead letters read, published and marked per round trip
# A replay is due this long after its publish, so the page is marked replayed before the fan-out
# can try it: otherwise a replay that dies again at once could be marked after its new death,
# hiding it from the list.
REPLAY_DELAY = 1.0


class DeadLetters:
    """Replay and purge dead letters; `queue_of` names a subscription's queue, None once the
    subscription is gone (its dead letters then stay listed until purged)."""

    def __init__(
        self,
        broker: Broker,
        attempt_log: AttemptLog,
        queue_of: Callable[[str], str | None],
        *,
        clock: Clock = SYSTEM_CLOCK,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.broker = broker
        self.attempt_log = attempt_log
        self.queue_of = queue_of
        self.clock = clock
        self.page_size = page_size

    async def replay(self, query: DeadLetterQuery) -> int:
        """Re-publish every matching dead letter not yet replayed; returns how many.

        `BrokerUnavailable` (or a store error) stops it: what was published before is marked,
        so calling again carries on with the rest.
        """
        until = self.clock.now() if query.until is None else query.until
        page = dataclasses.replace(query, until=until, limit=self.page_size)
        replayed = 0
        skipped: Counter[str] = Counter()
        try:
            while True:
                found = await self.attempt_log.find_dead_letters(page)
                if not found:
                    break
                replayed += await self._replay_page(found, skipped)
                if len(found) < self.page_size:
                    break
                last = found[-1]
                page.after = (last.dead_at, last.delivery_id)
        finally:
            for subscription, count in sorted(skipped.items()):
                log.warning(
                    "%d dead letters of subscription %r were not replayed: it no longer exists",
                    count,
                    subscription,
                )
        if replayed:
            log.info("replayed %d dead letters", replayed)
        return replayed

    async def _replay_page(self, found: list[DeadLetter], skipped: Counter[str]) -> int:
        """Publish one page, then mark what was published (even when some publishes failed)."""
        work: list[tuple[str, str, Event]] = []
        for dl in found:
            queue = self.queue_of(dl.subscription)
            if queue is None:
                skipped[dl.subscription] += 1
                continue
            try:
                event = Event.from_attributes(dl.attributes, dl.data)
            except InvalidEvent as exc:  # cannot happen for a row hookhub wrote; never fatal
                log.error("dead letter %s cannot be rebuilt as an event (%s): skipped", dl.delivery_id, exc)
                continue
            work.append((dl.delivery_id, queue, event))
        results = await asyncio.gather(
            *(self.broker.schedule(queue, event, attempt=1, delay=REPLAY_DELAY) for _, queue, event in work),
            return_exceptions=True,
        )
        published = [did for (did, _, _), result in zip(work, results, strict=True) if result is None]
        if published:
            await self.attempt_log.mark_replayed(published)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return len(published)

    async def purge(self, query: DeadLetterQuery) -> int:
        """Delete the matching dead letters for good (replayed or not); returns how many."""
        purged = await self.attempt_log.purge_dead_letters(query)
        if purged:
            log.info("purged %d dead letters", purged)
        return purged
