"""How archived events are laid out: object keys by hour, and gzip'd JSON Lines inside.

Each line is one event: its `attributes()` plus `data` (the body as text when it is valid UTF-8,
so `zcat | jq` reads a JSON webhook as written) or `data_base64` (any other bytes). Neither name
can be an extension (`events.RESERVED_NAMES`), so a line is the event and nothing else.

Keys are `events/YYYY/MM/DD/HH/<write time in ms>-<8 hex>.jsonl.gz` under the archive's root:
listing one hour is one prefix, keys sort in write order, and retention drops whole hours. An
event whose `time` Python cannot read (a leap second) is filed under the hour it was written,
and a scan takes the write time in the key as its time, so it is still found.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import time
import uuid
import zlib
from collections.abc import Iterable, Sequence
from typing import IO, Any

from hookhub.archive.base import ArchiveCorrupt
from hookhub.errors import InvalidEvent
from hookhub.events import Event
from hookhub.replay import event_time

ROOT = "events"
SUFFIX = ".jsonl.gz"
HOUR = 3600
# zlib level: 1 is several times faster than the default 6 and compresses JSON almost as well;
# the archiver writes every event the hub takes, so its CPU is what matters.
COMPRESS_LEVEL = 1
_DUMPS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode
_LOADS = json.JSONDecoder().decode


def hour_tuple(hour: int) -> tuple[int, int, int, int]:
    """(year, month, day, hour) of hour number `hour` since the epoch, UTC."""
    t = time.gmtime(hour * HOUR)
    return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour)


def partition(hour: int) -> str:
    """The key prefix of one hour: `events/YYYY/MM/DD/HH`."""
    year, month, day, hh = hour_tuple(hour)
    return f"{ROOT}/{year:04d}/{month:02d}/{day:02d}/{hh:02d}"


def object_name(written_ms: int) -> str:
    """A new object's name: sorts by write time, unique across writers."""
    return f"{written_ms:013d}-{uuid.uuid4().hex[:8]}{SUFFIX}"


def written_at(key: str) -> float:
    """The write time, unix seconds, that `object_name` put into `key` (0 if it has none)."""
    name = key.rpartition("/")[2]
    digits = name.partition("-")[0]
    return int(digits) / 1000 if digits.isdigit() else 0.0


def by_hour(events: Iterable[Event], written: float) -> dict[int, list[Event]]:
    """The events grouped by the hour of their `time` (the write time when unreadable)."""
    groups: dict[int, list[Event]] = {}
    for event in events:
        at = event_time(event)
        hour = int((written if at is None else at) // HOUR)
        groups.setdefault(hour, []).append(event)
    return groups


def encode_line(event: Event) -> bytes:
    record: dict[str, Any] = event.attributes()
    try:
        record["data"] = event.data.decode()
    except UnicodeDecodeError:
        record["data_base64"] = base64.b64encode(event.data).decode()
    return _DUMPS(record).encode() + b"\n"


def encode(events: Sequence[Event]) -> bytes:
    """One object's body: the events as gzip'd JSON Lines, in order."""
    raw = b"".join(map(encode_line, events))
    return gzip.compress(raw, compresslevel=COMPRESS_LEVEL, mtime=0)


def decode_line(line: bytes, where: str) -> Event:
    """One line back into its event; `ArchiveCorrupt` naming `where` if it is not one."""
    try:
        record = _LOADS(line.decode())
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        if "data_base64" in record:
            data = base64.b64decode(record.pop("data_base64"), validate=True)
        else:
            data = record.pop("data").encode()
        return Event.from_attributes(record, data)
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error, InvalidEvent) as exc:
        raise ArchiveCorrupt(f"archive object {where} is not an event: {exc}") from exc


class ObjectReader:
    """Streams one object's events from a binary stream, a few at a time (the caller hops to a
    thread per chunk, not per line), with their line numbers."""

    def __init__(self, key: str, raw: IO[bytes]) -> None:
        self.key = key
        self._raw = raw
        self._gzip = gzip.GzipFile(fileobj=raw, mode="rb")
        self._line = -1

    def read(self, limit: int) -> list[tuple[int, Event]]:
        """Up to `limit` more (line number, event) pairs; empty at the end of the object."""
        out: list[tuple[int, Event]] = []
        try:
            for _ in range(limit):
                line = self._gzip.readline()
                if not line:
                    break
                self._line += 1
                if not line.endswith(b"\n"):
                    raise ArchiveCorrupt(f"archive object {self.key} ends inside line {self._line}")
                out.append((self._line, decode_line(line, f"{self.key} line {self._line}")))
        except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            raise ArchiveCorrupt(f"archive object {self.key} is not readable gzip: {exc}") from exc
        return out

    def close(self) -> None:
        try:
            self._gzip.close()
        finally:
            self._raw.close()
