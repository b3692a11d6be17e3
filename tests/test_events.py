"""`Event` refuses, wherever it is built, any attribute a broker, store or subscriber cannot carry."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookhub.errors import InvalidEvent, Unprocessable
from hookhub.events import MAX_ATTRIBUTES_BYTES, Event


def make(**overrides: Any) -> Event:
    fields: dict[str, Any] = {"id": "e-1", "source": "/s", "type": "com.t", "data": b"{}"}
    return Event(**(fields | overrides))


@pytest.mark.parametrize(
    ("overrides", "attribute"),
    [
        ({"id": ""}, "id"),
        ({"source": " \t"}, "source"),
        ({"type": "\u3000"}, "type"),  # blank, if not ASCII blank
        ({"id": "a\x00b"}, "id"),
        ({"id": "a\x7f"}, "id"),
        ({"subject": "a\x85"}, "subject"),  # C1 control
        ({"type": "t\ud800"}, "type"),  # lone surrogate
        ({"dataschema": "\U0001fffe"}, "dataschema"),  # noncharacter
        ({"id": "i" * 256}, "id"),
        ({"source": "é" * 128}, "source"),  # 256 bytes in UTF-8
        ({"correlationid": "c" * 256}, "correlationid"),
        ({"subject": "s" * 4097}, "subject"),
        ({"time": "2024-01-01 00:00"}, "time"),
        ({"extensions": {"id": "shadow"}}, "id"),
        ({"extensions": {"datacontenttype": "x/y"}}, "datacontenttype"),
        ({"extensions": {"correlationid": "c"}}, "correlationid"),
        ({"extensions": {"Tenant": "x"}}, "Tenant"),
        ({"extensions": {"x-y": "x"}}, "x-y"),
        ({"extensions": {"a" * 21: "x"}}, "a" * 21),
        ({"extensions": {"tenant": "a\nb"}}, "tenant"),
        ({"extensions": {"tenant": 7}}, "tenant"),
        ({"extensions": {f"e{i}": "x" * 4000 for i in range(3)}}, "attributes"),
        ({"data": "text"}, "data"),
    ],
)
def test_invalid_attribute_is_a_422_naming_it(overrides: dict[str, Any], attribute: str) -> None:
    with pytest.raises(InvalidEvent) as raised:
        make(**overrides)
    assert isinstance(raised.value, Unprocessable) and raised.value.status == 422
    assert raised.value.attribute == attribute
    assert raised.value.body()["detail"]["attribute"] == attribute


def test_valid_non_ascii_and_bounds_pass() -> None:
    event = make(
        id="é" * 127,  # 254 bytes
        type="com.ünï.✓",
        subject="invoices/42 ünïcode \U0001f600",
        extensions={"tenant": "é✓", "a" * 20: "x", "traceparent": "00-abc-def-01"},
        time="2024-01-01T00:00:00.123456+02:00",
    )
    assert Event.from_attributes(event.attributes(), event.data) == event


def test_empty_optional_attributes_are_absent() -> None:
    event = make(subject="", dataschema="", datacontenttype="", time="")
    assert (event.subject, event.dataschema, event.datacontenttype) == (None, None, None)
    assert event.time and Event.from_attributes(event.attributes(), event.data) == event


def test_rebuilding_from_broker_headers_validates_too() -> None:
    """A consumer rebuilding a foreign message gets the same refusal (the broker logs it as poison)."""
    with pytest.raises(InvalidEvent):
        Event.from_attributes({"id": "e", "source": "/s", "type": "t", "Bad-Name": "x"}, b"")


def test_total_size_is_bounded() -> None:
    names = [f"e{i}" for i in range(MAX_ATTRIBUTES_BYTES // 4000 + 1)]
    with pytest.raises(InvalidEvent, match="all attributes together"):
        make(extensions={n: "x" * 4000 for n in names})


@settings(max_examples=200, deadline=None)
@given(
    id=st.text(max_size=300),
    type=st.text(max_size=10),
    subject=st.none() | st.text(max_size=10),
)
def test_fast_and_slow_paths_agree(id: str, type: str, subject: str | None) -> None:
    """Plain ASCII takes a shortcut; the answer must be the one a character-by-character check gives."""
    expected_ok = all(
        (name == "subject" or value.strip())
        and len(value.encode("utf-8", "surrogatepass")) <= 255
        and not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF for c in value)
        and not any(0xFDD0 <= ord(c) <= 0xFDEF or (ord(c) & 0xFFFE) == 0xFFFE for c in value)
        for name, value in (("id", id), ("type", type), ("subject", subject or ""))
    )
    try:
        make(id=id, type=type, subject=subject)
    except InvalidEvent:
        assert not expected_ok
    else:
        assert expected_ok
