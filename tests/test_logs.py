"""`hookhub.logs.configure`: the two formats an operator chooses between, on the root logger."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hookhub import logs


@pytest.fixture(autouse=True)
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_is_one_object_per_line_with_the_extra_fields() -> None:
    stream = io.StringIO()
    logs.configure("info", "json", stream=stream)
    log = logging.getLogger("hookhub.test")
    fields = {"status": 401, "provider": "stripe", "event_id": "evt_1", "color_message": "\x1b[36mx"}
    log.warning("request rejected", extra=fields)
    log.debug("not shown at info")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed\non two lines")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "warning" and first["logger"] == "hookhub.test"
    assert first["message"] == "request rejected"
    assert (first["status"], first["provider"], first["event_id"]) == (401, "stripe", "evt_1")
    assert first["time"].endswith("+00:00") and "T" in first["time"]
    assert "color_message" not in first  # uvicorn's copy of its message with terminal colours
    assert second["message"] == "it failed\non two lines" and "ValueError: boom" in second["exception"]


def test_text_appends_extra_fields_and_quotes_what_could_break_a_line() -> None:
    stream = io.StringIO()
    logs.configure("debug", "text", stream=stream)
    logging.getLogger("hookhub.test").info(
        "request rejected", extra={"status": 404, "reason": "unknown provider 'x'\nFAKE LINE"}
    )
    (line,) = stream.getvalue().splitlines()
    assert " INFO hookhub.test: request rejected status=404 reason=" in line
    assert line.endswith("reason=\"unknown provider 'x'\\nFAKE LINE\"")


def test_configure_again_replaces_its_handler_and_leaves_others() -> None:
    other = logging.NullHandler()
    logging.getLogger().addHandler(other)
    first, second = io.StringIO(), io.StringIO()
    logs.configure("info", "text", stream=first)
    logs.configure("warning", "json", stream=second)
    logging.getLogger("hookhub.test").warning("once")
    logging.getLogger("hookhub.test").info("filtered")
    assert first.getvalue() == "" and len(second.getvalue().splitlines()) == 1
    assert other in logging.getLogger().handlers


@pytest.mark.parametrize(("level", "fmt"), [("verbose", "text"), ("info", "xml")])
def test_unknown_level_or_format_is_refused(level: str, fmt: str) -> None:
    with pytest.raises(ValueError, match="must be one of"):
        logs.configure(level, fmt)


@given(message=st.text(), value=st.one_of(st.text(), st.integers(), st.none(), st.binary()))
def test_every_record_is_exactly_one_line_in_both_formats(message: str, value: object) -> None:
    record = logging.LogRecord("hookhub.fuzz", logging.INFO, __file__, 1, message, (), None)
    record.reason = value
    parsed = json.loads(logs.JsonFormatter().format(record))
    assert parsed["message"] == message and "reason" in parsed
    text = logs.TextFormatter().format(record)
    assert "reason=" in text
    assert text.count("\n") == message.count("\n")  # only the message itself may span lines
