"""The archive contract, on a file archive and on S3 (moto): write and scan by event time,
hour partitions, cursors, retention, and corruption reported rather than skipped."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from hookhub.archive import ArchiveCorrupt
from hookhub.archive.codec import encode_line
from hookhub.archive.objects import ObjectArchive
from hookhub.events import Event

from .conftest import overwrite, stored

BASE = 1_767_225_600.0  # 2026-01-01T00:00:00Z, on an hour
HOUR = 3600.0
KEY = re.compile(r"events/\d{4}/\d{2}/\d{2}/\d{2}/\d{13}-[0-9a-f]{8}\.jsonl\.gz")


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event(at: float, n: int = 0, data: bytes = b'{"n": 0}') -> Event:
    return Event(
        id=f"e{n}-{uuid.uuid4().hex[:6]}", source="/test", type="com.test.created", data=data, time=iso(at)
    )


async def scan(
    archive: ObjectArchive, start: float, end: float, cursor: str | None = None
) -> list[tuple[Event, str]]:
    async with contextlib.aclosing(archive.scan(start, end, cursor=cursor)) as rows:
        return [row async for row in rows]


async def events_of(archive: ObjectArchive, start: float, end: float) -> list[Event]:
    return [e for e, _ in await scan(archive, start, end)]


def spread(n: int, span: float, start: float = BASE) -> list[Event]:
    return [event(start + i * span / n, i) for i in range(n)]


async def test_scan_returns_exactly_the_events_of_the_interval(archive: ObjectArchive) -> None:
    events = [event(BASE + s, i) for i, s in enumerate([0, 1, 1799.999, 1800, 3599.999, 3600, 7199, 7200])]
    await archive.write(events)
    assert await events_of(archive, BASE, BASE + 7200) == events[:7]  # [start, end)
    assert await events_of(archive, BASE + 1, BASE + 1800) == events[1:3]
    assert await events_of(archive, BASE + 1800, BASE + 3600) == events[3:5]
    assert await events_of(archive, BASE - 10 * HOUR, BASE) == []
    assert await events_of(archive, BASE + 5, BASE + 5) == []  # empty interval
    assert await events_of(archive, BASE + 9, BASE + 5) == []
    assert await events_of(archive, 0, 4e9) == events  # the walk stays cheap on a huge interval


async def test_events_come_back_byte_for_byte(archive: ObjectArchive) -> None:
    odd = Event(
        id="é/1",
        source="urn:x",
        type="com.x.y",
        data=b"\xff\x00binary\n{",
        datacontenttype="application/octet-stream",
        time="2026-01-01T00:30:00.123456+02:00",
        subject="sübject",
        dataschema="https://x/s",
        correlationid="corr",
        extensions={"tenant": "acme", "n1": "\u2603"},
    )
    text = event(BASE + 60, 1, data='{"név": "\u2603", "line": "a\\nb"}\n'.encode())
    await archive.write([odd, text])
    assert await events_of(archive, BASE - 3 * HOUR, BASE + HOUR) == [odd, text]


async def test_a_batch_is_written_as_one_object_per_hour(archive: ObjectArchive) -> None:
    events = [event(BASE + h * HOUR + 5, h) for h in (0, 2, 0, 5, 2)]
    await archive.write(events)
    keys = sorted(stored(archive))
    assert len(keys) == 3 and all(KEY.fullmatch(k) for k in keys)
    assert [k[:20] for k in keys] == ["events/2026/01/01/00", "events/2026/01/01/02", "events/2026/01/01/05"]
    assert len({k.rpartition("/")[2] for k in keys}) == 1  # one write: one name in each hour
    lines = {k[:20]: gzip.decompress(v).splitlines(keepends=True) for k, v in stored(archive).items()}
    assert lines["events/2026/01/01/00"] == [encode_line(events[0]), encode_line(events[2])]
    # hour order, then write order within each hour
    assert await events_of(archive, BASE, BASE + 6 * HOUR) == [events[i] for i in (0, 2, 1, 4, 3)]


async def test_scan_lists_only_the_hours_of_its_interval(
    archive: ObjectArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    await archive.write([event(BASE + h * HOUR, h) for h in range(-30, 30, 3)])
    listed: list[str] = []
    keys = archive._keys

    def listing(prefix: str) -> list[str]:
        listed.append(prefix)
        return keys(prefix)

    monkeypatch.setattr(archive, "_keys", listing)
    found = await events_of(archive, BASE + 2 * HOUR + 1, BASE + 7 * HOUR)
    assert [e.time for e in found] == [iso(BASE + 3 * HOUR), iso(BASE + 6 * HOUR)]
    assert listed == ["events/2026/01/01/03", "events/2026/01/01/06"]


async def test_objects_are_scanned_in_write_order(archive: ObjectArchive) -> None:
    batches = [[event(BASE + 10 + b, b * 10 + i) for i in range(3)] for b in range(4)]
    for batch in batches:
        await archive.write(batch)
        await asyncio.sleep(0.002)  # distinct write milliseconds
    assert await events_of(archive, BASE, BASE + HOUR) == [e for b in batches for e in b]


async def test_a_cursor_resumes_right_after_its_event(archive: ObjectArchive) -> None:
    first = spread(30, 4 * HOUR)
    await archive.write(first[:20])
    await archive.write(first[20:])
    everything = await scan(archive, BASE, BASE + 4 * HOUR)
    assert [e for e, _ in everything] == sorted(first, key=lambda e: (e.time[:13], first.index(e)))
    assert len({c for _, c in everything}) == len(everything)
    for i, (_, cursor) in enumerate(everything):
        assert await scan(archive, BASE, BASE + 4 * HOUR, cursor) == everything[i + 1 :]
    # a cursor bounds the resume from below only: a narrower interval still applies
    middle = everything[10][1]
    rest = [e for e, _ in everything[11:] if e.time < iso(BASE + 3 * HOUR)]
    assert await events_of_after(archive, BASE, BASE + 3 * HOUR, middle) == rest


async def events_of_after(archive: ObjectArchive, start: float, end: float, cursor: str) -> list[Event]:
    return [e for e, _ in await scan(archive, start, end, cursor)]


async def test_one_object_larger_than_a_read_chunk_streams_whole(archive: ObjectArchive) -> None:
    events = [event(BASE + i / 10, i, data=b"x" * 100) for i in range(700)]
    await archive.write(events)
    rows = await scan(archive, BASE, BASE + HOUR)
    assert [e for e, _ in rows] == events
    assert await scan(archive, BASE, BASE + HOUR, rows[300][1]) == rows[301:]


@pytest.mark.parametrize("cursor", ["", "nohash", "events/x#", "events/x#-1", "events/x#a"])
async def test_a_malformed_cursor_is_refused(archive: ObjectArchive, cursor: str) -> None:
    with pytest.raises(ValueError, match="not an archive cursor"):
        await scan(archive, BASE, BASE + HOUR, cursor)


async def test_an_event_whose_time_python_cannot_read_is_filed_when_written(archive: ObjectArchive) -> None:
    leap = Event(id="leap", source="/t", type="com.t", data=b"{}", time="2016-12-31T23:59:60Z")
    await archive.write([leap])
    (key,) = stored(archive)
    written = int(key.rpartition("/")[2][:13]) / 1000
    assert await events_of(archive, written - 1, written + 1) == [leap]
    assert await events_of(archive, 1483228000, 1483229000) == []


async def test_expire_deletes_whole_hours_that_ended_before(archive: ObjectArchive) -> None:
    for h in range(-50, 4):  # across a month and a year boundary
        await archive.write([event(BASE + h * HOUR + 1, h)])
    await archive.write([event(BASE + 2 * HOUR + 2, 99)])  # a second object in hour 2
    assert await archive.expire(BASE + 2 * HOUR + 1800) == 52  # hours -50..1 ended; hour 2 has not
    left = await events_of(archive, 0, 4e9)
    assert [e.time[:13] for e in left] == [iso(BASE + 2 * HOUR)[:13]] * 2 + [iso(BASE + 3 * HOUR)[:13]]
    assert await archive.expire(BASE + 2 * HOUR + 1800) == 0
    assert await archive.expire(BASE + 3 * HOUR) == 2  # hour 2 ended exactly then
    assert sorted(k[:20] for k in stored(archive)) == ["events/2026/01/01/03"]
    if hasattr(archive, "root"):  # no empty year, month or day directory is left behind
        dirs = [p for p in (archive.root / "events").rglob("*") if p.is_dir()]
        assert sorted(str(p.relative_to(archive.root)) for p in dirs) == [
            "events/2026",
            "events/2026/01",
            "events/2026/01/01",
            "events/2026/01/01/03",
        ]


async def test_expire_on_an_empty_archive_deletes_nothing(archive: ObjectArchive) -> None:
    assert await archive.expire(BASE) == 0
    await archive.write([])
    assert stored(archive) == {}
    assert await events_of(archive, 0, 4e9) == []


@pytest.mark.parametrize(
    "damage",
    [
        lambda body: b"not gzip at all",
        lambda body: body[: len(body) // 2],  # truncated mid-stream
        lambda body: gzip.compress(gzip.decompress(body) + b'{"id": "broken"\n'),  # a bad line
        lambda body: gzip.compress(gzip.decompress(body) + b'{"id": "x", "source": "/s"}\n'),  # no type
        lambda body: gzip.compress(gzip.decompress(body)[:-1]),  # last line cut
    ],
)
async def test_a_corrupt_object_is_a_clear_error_naming_it(archive: ObjectArchive, damage) -> None:
    await archive.write([event(BASE + i, i, data=bytes(range(256)) * 20) for i in range(50)])
    ((key, body),) = stored(archive).items()
    overwrite(archive, key, damage(body))
    with pytest.raises(ArchiveCorrupt, match=re.escape(key)):
        await scan(archive, BASE, BASE + HOUR)


async def test_concurrent_writes_all_land(archive: ObjectArchive) -> None:
    batches: Sequence[list[Event]] = [spread(20, HOUR, BASE + b) for b in range(8)]
    await asyncio.gather(*(archive.write(b) for b in batches))
    found = await events_of(archive, BASE, BASE + 2 * HOUR)
    assert sorted(e.id for e in found) == sorted(e.id for b in batches for e in b)
