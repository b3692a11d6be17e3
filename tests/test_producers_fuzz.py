"""The producer API's parser (binary, structured, batch) over hostile input: valid events or a 4xx."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers

from hookhub.errors import InvalidEvent, Rejection
from hookhub.events import Event
from hookhub.producers import BATCH, STRUCTURED, parse_events
from tests.providers.hostile import check_result, header_value, hostile_body, hostile_value, latin1_text

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

attribute_names = st.one_of(
    st.sampled_from(
        [
            *("id", "source", "type", "time", "subject", "dataschema", "datacontenttype", "correlationid"),
            *("specversion", "data", "data_base64", "tenant", "Tenant", "x-y", "a" * 21, "traceparent"),
        ]
    ),
    st.text(max_size=12),
)


@st.composite
def structured_event(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {"specversion": "1.0", "id": "e-1", "source": "/billing", "type": "com.acme.t"}
    for name in draw(st.lists(attribute_names, max_size=4)):
        event[name] = draw(hostile_value | st.sampled_from(["ok", "2024-01-01T00:00:00Z", "aGk="]))
    for name in draw(st.lists(st.sampled_from(list(event)), max_size=2, unique=True)):
        del event[name]
    return event


def encode(value: Any, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def run(body: bytes, headers: list[tuple[str, str]]) -> list[Event] | Rejection:
    raw = Headers(raw=[(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers])
    try:
        events, _ = parse_events(body, raw)
    except Rejection as exc:
        return exc
    return events


def check(outcome: list[Event] | Rejection, body: bytes | None = None) -> None:
    if isinstance(outcome, Rejection):
        check_result(outcome, b"")
        return
    assert outcome
    for event in outcome:
        check_result(event, event.data if body is None else body)
        assert not event.source.startswith("/providers/")


@FUZZ
@given(event=structured_event(), ascii_only=st.booleans(), correlation=st.none() | header_value)
def test_structured(event: dict[str, Any], ascii_only: bool, correlation: str | None) -> None:
    headers = [("content-type", STRUCTURED)]
    if correlation is not None:
        headers.append(("x-correlation-id", correlation))
    check(run(encode(event, ascii_only), headers))


@FUZZ
@given(events=st.lists(structured_event(), max_size=4) | hostile_value, ascii_only=st.booleans())
def test_batch(events: Any, ascii_only: bool) -> None:
    check(run(encode(events, ascii_only), [("content-type", BATCH + "; charset=utf-8")]))


@FUZZ
@given(
    body=hostile_body,
    content_type=st.sampled_from([STRUCTURED, BATCH, "application/json", "text/plain", ""]),
)
def test_hostile_bodies(body: bytes, content_type: str) -> None:
    headers = [("content-type", content_type), ("ce-specversion", "1.0")]
    headers += [("ce-id", "b-1"), ("ce-source", "/billing"), ("ce-type", "com.acme.t")]
    outcome = run(body, headers)
    check(
        outcome,
        body if not isinstance(outcome, Rejection) and content_type not in (STRUCTURED, BATCH) else None,
    )


ce_names = st.sampled_from(
    [
        *("ce-id", "ce-source", "ce-type", "ce-specversion", "ce-time", "ce-subject", "ce-dataschema"),
        *("ce-correlationid", "ce-datacontenttype", "ce-data", "ce-tenant", "ce-x-y", "ce-" + "a" * 25),
    ]
)


@FUZZ
@given(
    headers=st.lists(st.tuples(ce_names | latin1_text.map(lambda s: "ce-" + s), header_value), max_size=8),
    body=st.binary(max_size=50),
)
def test_binary_mode_headers(headers: list[tuple[str, str]], body: bytes) -> None:
    """Binary mode, each required attribute present once (first value wins), the rest hostile."""
    base = [("ce-specversion", "1.0"), ("ce-id", "b-1"), ("ce-source", "/billing"), ("ce-type", "t")]
    first = headers[:2] + base + headers[2:]  # hostile values may come first, duplicates after
    check(run(body, first), body)


@pytest.mark.parametrize(
    ("event", "attribute"),
    [
        ({"id": " "}, "id"),
        ({"type": "a\x00b"}, "type"),
        ({"source": "s" * 256}, "source"),
        ({"tenant": "a\nb"}, "tenant"),
        ({"Tenant": "x"}, "Tenant"),
        ({"time": "yesterday"}, "time"),
        ({"subject": "a\u0085b"}, "subject"),
        ({"dataschema": "\ufffe"}, "dataschema"),
    ],
)
def test_invalid_attribute_is_named(event: dict[str, Any], attribute: str) -> None:
    body = {"specversion": "1.0", "id": "e", "source": "/s", "type": "t", **event}
    with pytest.raises(InvalidEvent) as raised:
        parse_events(encode(body, ascii_only=False), {"content-type": STRUCTURED})
    assert raised.value.status == 422 and raised.value.attribute == attribute


def test_shadowing_extension_header_is_refused() -> None:
    """`ce-datacontenttype` would shadow the real content type on delivery."""
    headers = {"ce-specversion": "1.0", "ce-id": "e", "ce-source": "/s", "ce-type": "t"}
    with pytest.raises(InvalidEvent) as raised:
        parse_events(b"", headers | {"ce-datacontenttype": "x/y", "content-type": "a/b"})
    assert raised.value.attribute == "datacontenttype"


def test_batch_error_names_the_event() -> None:
    events = [{"specversion": "1.0", "id": f"e{i}", "source": "/s", "type": "t"} for i in range(3)]
    events[2]["id"] = "\t"
    with pytest.raises(InvalidEvent) as raised:
        parse_events(encode(events, ascii_only=True), {"content-type": BATCH})
    assert raised.value.attribute == "[2].id"


def test_empty_id_stays_a_missing_attribute() -> None:
    """SPEC: a missing required attribute is a 400 naming it; an empty one counts as missing."""
    body = {"specversion": "1.0", "id": "", "source": "/s", "type": "t"}
    with pytest.raises(Rejection) as raised:
        parse_events(encode(body, ascii_only=True), {"content-type": STRUCTURED})
    assert raised.value.status == 400 and "id" in raised.value.message
