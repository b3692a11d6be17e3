"""The archive interface: every event the hub accepted, kept by event time for resends.

The archiver writes batches; resend jobs (`hookhub.replay`) read an interval back, one event at a
time and resumable from a cursor, so a job that moves to another replica neither repeats nor
skips an event; retention deletes whole hours.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Sequence

from hookhub.events import Event


class ArchiveCorrupt(Exception):
    """An archived object cannot be read back (truncated gzip, a line that is not an event).

    Names the object and the line, so an operator can find it: a resend stops on it rather than
    skipping events silently.
    """


class Archive(ABC):
    """Append-only storage of events, partitioned by the hour of each event's `time`."""

    @abstractmethod
    async def write(self, events: Sequence[Event]) -> None:
        """Store `events`; once this returns they survive a crash (the archiver acks only then).

        A batch is all-or-nothing only per hour: on an exception some hours may be stored, which a
        retried batch then stores twice (at-least-once, like every other hop).
        """

    @abstractmethod
    def scan(
        self, start: float, end: float, *, cursor: str | None = None
    ) -> AsyncGenerator[tuple[Event, str], None]:
        """Every event whose `time` is in [start, end) (unix seconds), each with its cursor.

        Streams: memory stays flat whatever the interval. Order is hour by hour, objects in write
        order, events as written. With `cursor` (one this scan yielded before) it yields only the
        events after it. Raises `ArchiveCorrupt` on an object it cannot read.
        """

    @abstractmethod
    async def expire(self, before: float) -> int:
        """Delete every hour that ended at or before `before`; how many objects were deleted."""

    @abstractmethod
    async def close(self) -> None:
        """Release clients and handles; writes have completed (they are durable on return)."""
