"""Hypothesis strategies for hostile requests, shared by the provider and producer fuzz tests."""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import strategies as st

from hookhub.errors import Rejection
from hookhub.events import Event

# Header values as a server hands them over: Starlette decodes the raw bytes as latin-1, so any
# code point up to U+00FF can appear, controls and CR/LF included.
latin1_text = st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=40)
header_value = st.one_of(
    latin1_text,
    st.sampled_from(["", " ", "\t", "\x00", "a\r\nb", "Ã¼", "\x85", "x" * 300, "é" * 200, "y" * 20_000]),
)

# JSON scalars and containers in the positions the envelopes read (ids, types...)
hostile_scalar = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "\u2028", "\x00", "a\nb", "\ufffe", "x" * 300, "é" * 200, "z" * 5_000]),
    st.integers(),
    st.integers(min_value=10**200, max_value=10**300),
    st.floats(),
    st.booleans(),
    st.none(),
)
hostile_value = st.recursive(
    hostile_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
ENVELOPE_KEYS = [
    "id",
    "type",
    "event",
    "order_id",
    "webhook_event_type",
    "action",
    "event_id",
    "hottok",
    "challenge",
    "data",
]


@st.composite
def json_envelope(draw: st.DrawFn) -> bytes:
    """A JSON object with the envelope fields every provider reads, each hostile or plausible."""
    obj: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from(ENVELOPE_KEYS), unique=True)):
        obj[key] = draw(hostile_value | st.just("ok") | st.just({"type": "message"}))
    if draw(st.booleans()):
        obj["type"] = "url_verification"  # Slack's special reply path
    text = json.dumps(obj, ensure_ascii=draw(st.booleans()), allow_nan=True)
    # ensure_ascii=False can leave lone surrogates: encode them as the invalid UTF-8 they would be
    return text.encode("utf-8", "surrogatepass")


def deep(n: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * n + b"]" * n
    if kind == "object":
        return b'{"id":' * n + b"1" + b"}" * n
    return b'{"id": "1", "event": "E", "hottok": ' + b"[" * n + b"]" * n + b"}"


hostile_body = st.one_of(
    st.binary(max_size=300),
    json_envelope(),
    st.builds(deep, st.integers(50, 20_000), st.sampled_from(["list", "object", "field"])),
    st.sampled_from(
        [
            b'{"id": ' + b"9" * 5000 + b', "type": "t"}',
            b'{"id": 1e999, "type": "t"}',
            b'{"id": "\xff\xfe", "type": "t", "event": "E"}',
            b'{"id": "\\ud800", "type": "t"}',
            b"\xef\xbb\xbf{}",
            json.dumps({"id": "1", "type": "t"}).encode("utf-16"),
            b"payload=%7B%7D",
            b"",
        ]
    ),
)


def check_result(outcome: Event | Rejection, body: bytes) -> None:
    """The only acceptable outcomes: a valid event carrying the body untouched, or a 4xx."""
    if isinstance(outcome, Rejection):
        assert 400 <= outcome.status < 500, outcome
        assert outcome.message
        return
    assert isinstance(outcome, Event)
    assert outcome.data == body
    assert_carriable(outcome)
    # and it survives the broker's header round trip unchanged
    assert Event.from_attributes(outcome.attributes(), outcome.data) == outcome


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def assert_carriable(event: Event) -> None:
    """The rules, checked independently of `Event`'s own validation."""
    attributes = event.attributes()
    for name in ("id", "source", "type"):
        value = attributes[name]
        assert value.strip(), name
        assert len(value.encode("utf-8")) <= 255, name
    for name, value in attributes.items():
        assert re.fullmatch("[a-z0-9]{1,20}", name), name
        assert isinstance(value, str) and not _CONTROL.search(value), name
        value.encode("utf-8")  # no lone surrogate
    assert sum(len(k) + len(v.encode()) for k, v in attributes.items()) <= 8192 + len("specversion1.0")
