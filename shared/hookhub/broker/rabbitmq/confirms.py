"""Publisher-confirm bookkeeping for one confirm-mode channel, pipelined.

Every `publish` takes the next delivery tags and waits for the broker's Basic.Ack/Nack, which may
cover many tags at once (`multiple=True`), so any number of publishes are in flight together:
confirm-each would cap throughput at one round trip per message.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from pika import spec

from hookhub.broker.base import BrokerUnavailable, PublishUnconfirmed


class Batch:
    """The delivery tags of one `publish` call, the future its caller awaits, and, once the
    caller stopped waiting (timeout), the `late` future of its `PublishUnconfirmed`."""

    __slots__ = ("first", "last", "late", "waiter")

    def __init__(self, first: int, last: int, waiter: asyncio.Future[None]) -> None:
        self.first = first
        self.last = last
        self.waiter = waiter
        self.late: asyncio.Future[bool] | None = None

    def finish(self, error: BrokerUnavailable | None) -> None:
        """Confirmed (`error` None) or not: tell whoever still listens, once."""
        waiter = self.waiter
        if not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)
        late = self.late
        if late is not None and not late.done():
            late.set_result(error is None)

    def expire(self, timeout: float) -> None:
        """The caller's timeout: it gets `PublishUnconfirmed`, whose future the confirm settles."""
        waiter = self.waiter
        if not waiter.done():
            self.late = waiter.get_loop().create_future()
            message = f"no confirm from RabbitMQ within {timeout:g}s (the messages were sent)"
            waiter.set_exception(PublishUnconfirmed(message, self.late))


class ConfirmTracker:
    """Delivery tags handed out and the batches waiting for their confirms."""

    def __init__(self) -> None:
        self.next_tag = 1
        self.confirmed = 0  # every tag <= this is settled (acked or nacked)
        self.early: set[int] = set()  # single acks above the watermark (out of order)
        self.pending: deque[Batch] = deque()

    def track(self, count: int) -> Batch:
        """The batch of the next `count` messages sent on the channel (tags in send order)."""
        first = self.next_tag
        self.next_tag = first + count
        batch = Batch(first, self.next_tag - 1, asyncio.get_running_loop().create_future())
        self.pending.append(batch)
        return batch

    def on_confirm(self, frame: Any) -> None:
        """pika's ack_nack_callback."""
        method = frame.method
        tag: int = method.delivery_tag
        multiple: bool = method.multiple
        pending = self.pending
        if isinstance(method, spec.Basic.Nack):
            low = self.confirmed + 1 if multiple else tag
            error = BrokerUnavailable("RabbitMQ refused the message (nack)")
            for batch in pending:
                if batch.first > tag:
                    break
                if batch.last >= low:
                    batch.finish(error)
        confirmed = self.confirmed
        early = self.early
        if multiple:
            confirmed = max(confirmed, tag)
            if early:
                early.difference_update([t for t in early if t <= confirmed])
        elif tag == confirmed + 1:
            confirmed = tag
        elif tag > confirmed:
            early.add(tag)
        while early and confirmed + 1 in early:
            confirmed += 1
            early.discard(confirmed)
        self.confirmed = confirmed
        while pending and pending[0].last <= confirmed:
            pending.popleft().finish(None)  # a no-op for a batch a nack already failed

    def fail_all(self, error: BrokerUnavailable) -> None:
        """The channel is gone: no confirm will come for anything pending."""
        pending, self.pending = self.pending, deque()
        for batch in pending:
            batch.finish(error)
