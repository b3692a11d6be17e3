"""Group commit: many coroutines' small writes become one blocking call on one thread.

A durable write costs an fsync (milliseconds) however little it writes, so N concurrent requests
writing one row each must not cost N fsyncs. Each `submit` queues its items; a dedicated thread
takes everything queued so far, runs the blocking function once over all of it (one transaction,
one fsync), and hands each caller its share of the results. While one batch commits the next one
fills up, so the batch size adapts to the load with no added latency when idle.

Used by the embedded SQLite broker and the SQLite/PostgreSQL store.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)


class CommitterClosed(RuntimeError):
    """The committer was closed before the items could be submitted."""


@dataclass(slots=True)
class _Submission:
    items: list[Any]
    future: asyncio.Future[list[Any]]
    loop: asyncio.AbstractEventLoop


class GroupCommitter(Generic[T, R]):
    """Runs `fn(items) -> results` on a dedicated thread over everything submitted meanwhile.

    `fn` gets the concatenation of every queued submission (never splitting one, so a caller's
    items share one transaction) and must return one result per item, in order. If it raises,
    every caller in that batch gets the exception: the batch is all-or-nothing, like the
    transaction behind it. A caller that stops waiting (timeout, cancellation) does not stop
    its items from being committed.
    """

    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R]],
        *,
        name: str = "group-commit",
        max_items: int = 5000,
    ) -> None:
        self._fn = fn
        self._max_items = max_items
        self._queue: queue.SimpleQueue[_Submission | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders `close` against `enqueue`: nothing lands after the sentinel
        self._closed = False
        self.batches = 0  # calls of `fn`, i.e. commits: lets tests and metrics see the batching
        self.items = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def closed(self) -> bool:
        return self._closed

    def enqueue(self, items: Sequence[T]) -> asyncio.Future[list[R]]:
        """Queue `items` and return the future of their results (for callers that add their own
        timeout without wrapping a coroutine in a task)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[R]] = loop.create_future()
        if not items:
            future.set_result([])
            return future
        with self._lock:
            if self._closed:
                raise CommitterClosed("the committer is closed")
            self._queue.put(_Submission(list(items), future, loop))
        return future

    async def submit(self, items: Sequence[T]) -> list[R]:
        """Commit `items` together with whatever else is queued; return their results."""
        return await self.enqueue(items)

    def close(self, timeout: float | None = None) -> None:
        """Commit what is already queued, then stop the thread (blocking: call it via a thread
        from async code if the last batch may be slow)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            count = len(first.items)
            while count < self._max_items:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
                count += len(nxt.items)
            self._process(batch, count)

    def _process(self, batch: list[_Submission], count: int) -> None:
        items = batch[0].items if len(batch) == 1 else [item for sub in batch for item in sub.items]
        outcomes: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]]
        outcomes = {}
        try:
            results = self._fn(items)
            if len(results) != count:
                raise RuntimeError(f"batch function returned {len(results)} results for {count} items")
        except Exception as exc:
            for sub in batch:
                outcomes.setdefault(sub.loop, []).append((sub.future, None, exc))
        else:
            start = 0
            for sub in batch:
                end = start + len(sub.items)
                outcomes.setdefault(sub.loop, []).append((sub.future, list(results[start:end]), None))
                start = end
        self.batches += 1
        self.items += count
        # one wake-up per event loop per batch, not one per waiter
        for loop, entries in outcomes.items():
            try:
                loop.call_soon_threadsafe(_resolve, entries)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                log.debug("group commit result dropped: event loop closed")


def _resolve(entries: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, exc in entries:
        if future.done():  # the caller gave up (timeout or cancellation)
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
