"""The CLI's reading of operators' times (`--from`, `--since`, ...) into the RFC 3339 the API takes."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from hookhub.cli_ops import parse_when, rfc3339

NOW = datetime(2026, 12, 5, 12, 0, 0, tzinfo=UTC)
# The admin API's accepted form (admin/models.py): seconds required, an offset required.
API_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")
UNITS = {
    "s": timedelta(seconds=1),
    "sec": timedelta(seconds=1),
    "seconds": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "min": timedelta(minutes=1),
    "minutes": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "hr": timedelta(hours=1),
    "hours": timedelta(hours=1),
    "d": timedelta(days=1),
    "day": timedelta(days=1),
    "days": timedelta(days=1),
    "w": timedelta(weeks=1),
    "weeks": timedelta(weeks=1),
}


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@given(
    amount=st.integers(0, 10_000),
    unit=st.sampled_from(sorted(UNITS)),
    form=st.sampled_from(["-{a}{u}", "- {a} {u}", "{a}{u} ago", "{a} {u} ago", "  -{a}{U}  ", "{a}{U} AGO"]),
)
@example(amount=2, unit="h", form="-{a}{u}")
@example(amount=30, unit="m", form="{a}{u} ago")
def test_relative_times_are_now_minus_the_amount(amount: int, unit: str, form: str) -> None:
    text = form.format(a=amount, u=unit, U=unit.upper())
    result = parse_when(text, NOW)
    assert API_RFC3339.match(result), result
    assert instant(result) == NOW - amount * UNITS[unit]


@given(st.floats(0, 1000, allow_nan=False).map(lambda f: round(f, 2)), st.sampled_from(["h", "d"]))
def test_fractional_amounts(amount: float, unit: str) -> None:
    delta = instant(parse_when(f"-{amount}{unit}", NOW)) - (NOW - amount * UNITS[unit])
    assert abs(delta) <= timedelta(microseconds=1)


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
        ),
    )
)
def test_absolute_times_keep_their_instant_and_come_out_in_utc(moment: datetime) -> None:
    for text in (moment.isoformat(), rfc3339(moment), moment.isoformat().replace("T", " ")):
        result = parse_when(text, NOW)
        assert API_RFC3339.match(result), (text, result)
        assert instant(result) == moment


@given(st.integers(0, 253402300799))
def test_unix_seconds(seconds: int) -> None:
    assert instant(parse_when(str(seconds), NOW)).timestamp() == seconds


def test_now_and_naive_times_are_utc() -> None:
    assert parse_when("now", NOW) == "2026-12-05T12:00:00Z"
    assert parse_when(" NOW ", NOW) == "2026-12-05T12:00:00Z"
    assert parse_when("2026-12-01T08:30", NOW) == "2026-12-01T08:30:00Z"
    assert parse_when("2026-12-01", NOW) == "2026-12-01T00:00:00Z"
    assert parse_when("2026-12-01t08:30:00z", NOW) == "2026-12-01T08:30:00Z"
    assert parse_when("2026-12-01T08:30:00.250+01:00", NOW) == "2026-12-01T07:30:00.250000Z"


@pytest.mark.parametrize("text", ["yesterday", "-2", "2h", "-2 fortnights", "3 ago", "", "--1h", "-1e9d"])
def test_unreadable_times_are_value_errors_that_say_what_works(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_when(text, NOW)
    message = str(caught.value)
    assert "unit" in message or "RFC 3339" in message or "out of range" in message


@given(st.text(max_size=40))
@example("-99999999999w")
@example("99999999999999999999")
def test_any_text_is_a_time_or_a_value_error(text: str) -> None:
    try:
        result = parse_when(text, NOW)
    except ValueError:
        return
    assert API_RFC3339.match(result), (text, result)
