"""The object format: any event hookhub can carry survives encode and decode unchanged."""

from __future__ import annotations

import base64
import gzip
import io
import json

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hookhub.archive.codec import ObjectReader, by_hour, encode, encode_line, partition, written_at
from hookhub.errors import InvalidEvent
from hookhub.events import RESERVED_NAMES, Event

# mostly what CloudEvents allows (no control characters or surrogates), now and then anything:
# an event the constructor refuses is not drawn
text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40) | st.text(
    min_size=1, max_size=5
)
optional = st.none() | text
times = st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()) | st.just("2016-12-31T23:59:60Z")
extension_names = st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True).filter(lambda n: n not in RESERVED_NAMES)


@st.composite
def events(draw: st.DrawFn) -> Event:
    try:
        return Event(
            id=draw(text),
            source=draw(text),
            type=draw(text),
            data=draw(
                st.binary(max_size=300) | st.text(max_size=100).map(lambda s: s.encode(errors="replace"))
            ),
            datacontenttype=draw(optional),
            time=draw(times),
            correlationid=draw(st.just("") | text),
            subject=draw(optional),
            dataschema=draw(optional),
            extensions=draw(st.dictionaries(extension_names, text, max_size=4)),
        )
    except InvalidEvent:
        assume(False)
        raise


@settings(max_examples=150, deadline=None)
@given(st.lists(events(), min_size=1, max_size=3))
def test_any_event_round_trips_through_an_object(batch: list[Event]) -> None:
    reader = ObjectReader("k", io.BytesIO(encode(batch)))
    assert [event for _, event in reader.read(10)] == batch
    assert reader.read(10) == []


@given(events())
def test_a_line_is_the_attributes_plus_data_or_data_base64(event: Event) -> None:
    record = json.loads(encode_line(event))
    try:
        text = event.data.decode()
    except UnicodeDecodeError:
        assert "data" not in record
        assert base64.b64decode(record.pop("data_base64")) == event.data
    else:
        assert "data_base64" not in record
        assert record.pop("data") == text
    assert record == event.attributes()


def test_objects_are_gzip_with_one_line_per_event() -> None:
    batch = [Event(id=str(i), source="/s", type="t", data=b'{"a":1}\n') for i in range(3)]
    lines = gzip.decompress(encode(batch)).splitlines()
    assert len(lines) == 3 and all(b"\n" not in line for line in lines)


def test_partitions_and_names() -> None:
    assert partition(0) == "events/1970/01/01/00"
    assert partition(491_007) == "events/2026/01/05/15"
    assert written_at("events/2026/01/01/00/1767225600123-abcdef12.jsonl.gz") == 1767225600.123
    leap = Event(id="1", source="/s", type="t", data=b"", time="2016-12-31T23:59:60Z")
    on_time = Event(id="2", source="/s", type="t", data=b"", time="2026-01-01T00:00:00+01:00")
    assert by_hour([leap, on_time], written=7300.0) == {2: [leap], 490_895: [on_time]}
