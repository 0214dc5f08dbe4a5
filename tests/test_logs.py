"""Structured logs: one JSON object per line, with the event's extra fields as keys."""

from __future__ import annotations

import json
import logging

import pytest

from taskfleet import logs


def test_json_lines_carry_the_event_fields() -> None:
    record = logging.LogRecord("taskfleet.app", logging.INFO, __file__, 1, "reaped %d", (3,), None)
    record.action = "reap"
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["message"] == "reaped 3" and line["action"] == "reap"
    assert (line["level"], line["logger"]) == ("info", "taskfleet.app")


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="'text' or 'json'"):
        logs.configure("info", "xml")
