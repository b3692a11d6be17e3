"""The admin API's parsers: times (RFC 3339 or unix seconds), keyset cursors, durations."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from hookhub.admin.models import (
    DELIVERY_ID_PATTERN,
    MAX_UNIX,
    DeadLetterSelector,
    JobOut,
    ReplayIn,
    RotateIn,
    SubscriptionIn,
    decode_cursor,
    encode_cursor,
    parse_time,
)

DELIVERY = "msg_" + "a2" * 13
AWARE = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC))


@given(AWARE, st.integers(-14 * 60, 14 * 60))
def test_rfc3339_in_any_offset_is_the_same_instant(moment: datetime, offset_minutes: int) -> None:
    local = moment.astimezone(timezone(timedelta(minutes=offset_minutes)))
    text = local.isoformat()
    assert parse_time(text) == pytest.approx(moment.timestamp(), abs=1e-6)
    assert parse_time(text.replace("+00:00", "Z")) == pytest.approx(moment.timestamp(), abs=1e-6)


@given(st.floats(0, MAX_UNIX, allow_nan=False))
def test_unix_seconds_as_number_or_string(seconds: float) -> None:
    assert parse_time(seconds) == seconds
    assert parse_time(repr(seconds)) == seconds


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00Z", 1714564800.0),
        ("2024-05-01t12:00:00z", 1714564800.0),
        ("2024-05-01T14:00:00+02:00", 1714564800.0),
        ("2024-05-01T12:00:00.123456789Z", 1714564800.123457),
        ("1714564800", 1714564800.0),
        (" 1714564800.5 ", 1714564800.5),
    ],
)
def test_known_times(text: str, expected: float) -> None:
    assert parse_time(text) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "bad",
    [
        "2024-05-01T12:00:00",  # no offset: ambiguous
        "2024-05-01",
        "2024-13-01T00:00:00Z",
        "2016-12-31T23:59:60Z",  # a leap second Python cannot represent
        "yesterday",
        "",
        "-1",
        "1e400",
        "nan",
        True,
        None,
        [1],
        MAX_UNIX + 1,
        -0.5,
        math.inf,
    ],
)
def test_bad_times_are_refused_with_a_message(bad: object) -> None:
    with pytest.raises(ValueError, match=r"time"):
        parse_time(bad)


@given(st.text(max_size=60))
def test_parse_time_never_fails_otherwise(text: str) -> None:
    try:
        seconds = parse_time(text)
    except ValueError:
        return
    assert 0 <= seconds <= MAX_UNIX


@given(st.floats(0, MAX_UNIX, allow_nan=False), st.from_regex(r"msg_[a-z2-7]{26}", fullmatch=True))
def test_cursor_round_trip(dead_at: float, delivery_id: str) -> None:
    assert decode_cursor(encode_cursor(dead_at, delivery_id)) == (dead_at, delivery_id)


@given(st.text(max_size=80))
def test_garbage_cursor_is_a_value_error(cursor: str) -> None:
    try:
        dead_at, delivery_id = decode_cursor(cursor)
    except ValueError as exc:
        assert "cursor" in str(exc)
    else:  # only something shaped like a real cursor decodes
        assert math.isfinite(dead_at)
        assert re.fullmatch(DELIVERY_ID_PATTERN, delivery_id)


def test_selector_needs_ids_or_subscription() -> None:
    with pytest.raises(ValidationError, match="delivery_ids"):
        DeadLetterSelector()
    assert DeadLetterSelector(delivery_ids=[DELIVERY]).delivery_ids == [DELIVERY]
    with pytest.raises(ValidationError, match="pattern"):
        DeadLetterSelector(delivery_ids=["not-an-id"])


def test_replay_in_uses_from_and_to() -> None:
    body = ReplayIn.model_validate({"subscription": "crm", "from": "2024-05-01T00:00:00Z", "to": 1714608000})
    assert (body.start, body.end) == (1714521600.0, 1714608000.0)
    job = JobOut.model_validate(
        {
            "id": "a" * 32,
            "subscription": "crm",
            "start": 0,
            "end": 1.5,
            "state": "queued",
            "scanned": 0,
            "sent": 0,
            "error": None,
            "created_at": 0,
            "updated_at": 0,
            "finished_at": None,
        }
    )
    out = job.model_dump(mode="json", by_alias=True)
    assert (out["from"], out["to"]) == ("1970-01-01T00:00:00Z", "1970-01-01T00:00:01.500000Z")


def test_durations_take_units_and_are_bounded() -> None:
    assert RotateIn.model_validate({"overlap": "24h"}).overlap == 86400.0
    assert RotateIn.model_validate({"overlap": 90}).overlap == 90.0
    assert RotateIn().overlap == 86400.0
    with pytest.raises(ValidationError, match="overlap"):
        RotateIn.model_validate({"overlap": "31d"})
    with pytest.raises(ValidationError, match="overlap"):
        RotateIn.model_validate({"overlap": "soon"})


def test_subscription_in_checks_type_patterns_and_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="type pattern"):
        SubscriptionIn.model_validate({"name": "x", "url": "http://a/", "types": ["com..x"]})
    with pytest.raises(ValidationError, match="colour"):
        SubscriptionIn.model_validate({"name": "x", "url": "http://a/", "types": ["#"], "colour": 1})
