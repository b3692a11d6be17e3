"""What the file and S3 archives share: keys, the hour walk, scan, write and expire.

A subclass supplies blocking primitives over keys relative to its root (list, put, open,
delete); this class runs them in threads, so the event loop never waits on a disk or on S3.
Only the hours that can matter are listed: the walk descends year, month, day, hour and skips
every level outside the wanted range, so a scan over a long interval costs one listing per
hour that holds data, not per hour of the interval.
"""

from __future__ import annotations

import asyncio
import math
import time
from abc import abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import IO

from hookhub.archive.base import Archive
from hookhub.archive.codec import (
    HOUR,
    ROOT,
    ObjectReader,
    by_hour,
    encode,
    hour_tuple,
    object_name,
    written_at,
)
from hookhub.archive.codec import partition as hour_partition
from hookhub.events import Event
from hookhub.replay import event_time

READ_CHUNK = 256  # events decoded per thread hop while scanning
Parts = tuple[int, ...]


def parse_cursor(cursor: str | None) -> tuple[str, int]:
    """(key, line) of a cursor `<key>#<line>`; ("", -1) for none."""
    if cursor is None:
        return "", -1
    key, sep, line = cursor.rpartition("#")
    if not sep or not key or not line.isdigit():
        raise ValueError(f"not an archive cursor: {cursor[:200]!r}")
    return key, int(line)


class ObjectArchive(Archive):
    """An archive over a store of named objects (a directory tree, an S3 prefix)."""

    # Blocking primitives, each called in a worker thread. Keys are relative to the root,
    # `events/YYYY/MM/DD/HH/<name>`.

    @abstractmethod
    def _children(self, prefix: str) -> list[str]:
        """The names one level below the partition `prefix` (e.g. the years under `events`)."""

    @abstractmethod
    def _keys(self, prefix: str) -> list[str]:
        """The archived objects' keys in the hour `prefix`, any order (unfinished writes left out)."""

    @abstractmethod
    def _put(self, key: str, body: bytes) -> None:
        """Store `body` as `key`, durably and atomically (readers never see part of it)."""

    @abstractmethod
    def _open(self, key: str) -> IO[bytes] | None:
        """A stream of the object's bytes; None if it is gone (expired since it was listed)."""

    @abstractmethod
    def _drop(self, prefix: str) -> int:
        """Delete the hour `prefix` with everything in it; how many archived objects it held."""

    # The Archive interface -----------------------------------------------------------------

    async def write(self, events: Sequence[Event]) -> None:
        if events:
            await asyncio.to_thread(self._write, events)

    def _write(self, events: Sequence[Event]) -> None:
        written = time.time()
        name = object_name(int(written * 1000))
        for hour, group in sorted(by_hour(events, written).items()):
            self._put(f"{hour_partition(hour)}/{name}", encode(group))

    async def scan(
        self, start: float, end: float, *, cursor: str | None = None
    ) -> AsyncGenerator[tuple[Event, str], None]:
        after_key, after_line = parse_cursor(cursor)
        if not end > start:
            return
        lo = hour_tuple(math.floor(start / HOUR))
        hi = hour_tuple(math.ceil(end / HOUR) - 1)
        async for hour in self._walk(ROOT, (), lo, hi):
            keys = sorted(await asyncio.to_thread(self._keys, hour))
            for key in keys:
                if key < after_key:
                    continue
                skip = after_line if key == after_key else -1
                raw = await asyncio.to_thread(self._open, key)
                if raw is None:
                    continue
                reader = ObjectReader(key, raw)
                fallback = written_at(key)
                try:
                    while chunk := await asyncio.to_thread(reader.read, READ_CHUNK):
                        for line, event in chunk:
                            if line <= skip:
                                continue
                            at = event_time(event)
                            if start <= (fallback if at is None else at) < end:
                                yield event, f"{key}#{line}"
                finally:
                    reader.close()

    async def expire(self, before: float) -> int:
        last = math.floor(before / HOUR) - 1  # the last hour that ended at or before `before`
        deleted = 0
        async for hour in self._walk(ROOT, (), (0, 0, 0, 0), hour_tuple(last)):
            deleted += await asyncio.to_thread(self._drop, hour)
        return deleted

    async def _walk(self, prefix: str, parts: Parts, lo: Parts, hi: Parts) -> AsyncIterator[str]:
        """The hour partitions between `lo` and `hi` (year, month, day, hour; inclusive) that
        exist, in time order, listing only the levels that can hold one."""
        if len(parts) == 4:
            yield prefix
            return
        names = await asyncio.to_thread(self._children, prefix)
        for number, name in sorted((int(n), n) for n in names if n.isdigit()):
            below = (*parts, number)
            if lo[: len(below)] <= below <= hi[: len(below)]:
                async for hour in self._walk(f"{prefix}/{name}", below, lo, hi):
                    yield hour
