"""Log output as text or JSON lines (``[server] log_format``)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from xmppd import logs


def _record(msg="hello %s", args=("world",), level=logging.WARNING, **extra):
    record = logging.LogRecord("xmppd.test", level, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def test_json_line_has_time_level_logger_message():
    line = logs.JSONFormatter().format(_record())
    assert "\n" not in line
    entry = json.loads(line)
    assert list(entry) == ["time", "level", "logger", "message"]
    assert entry["level"] == "WARNING" and entry["logger"] == "xmppd.test"
    assert entry["message"] == "hello world"
    assert entry["time"].endswith("Z") and entry["time"][10] == "T"


def test_json_line_carries_extra_fields_and_the_traceback():
    try:
        raise ValueError("boom\nline two")
    except ValueError:
        import sys

        record = _record(jid="alice@localhost", count=3, obj=object())
        record.exc_info = sys.exc_info()
    entry = json.loads(logs.JSONFormatter().format(record))
    assert entry["jid"] == "alice@localhost" and entry["count"] == 3
    assert entry["obj"].startswith("<object")  # not a JSON value: its str()
    assert "ValueError: boom" in entry["exc"] and "Traceback" in entry["exc"]


@pytest.fixture
def bare_root():
    """The root logger, restored afterwards; the test empties it (pytest adds its capture
    handlers after fixtures are set up)."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    yield root
    root.handlers = saved
    root.setLevel(level)


def test_setup_json_through_a_logger(bare_root):
    bare_root.handlers = []
    out = io.StringIO()
    assert logs.setup("info", "json", out) is not None
    logging.getLogger("xmppd.x").info("started %d", 5, extra={"port": 5222})
    logging.getLogger("xmppd.x").debug("not shown")
    [line] = out.getvalue().splitlines()
    assert json.loads(line)["message"] == "started 5" and json.loads(line)["port"] == 5222


def test_setup_text_replaces_its_own_handler(bare_root):
    bare_root.handlers = []
    first, second = io.StringIO(), io.StringIO()
    logs.setup("debug", "json", first)
    logs.setup("warning", "text", second)
    assert len(bare_root.handlers) == 1
    logging.getLogger("xmppd.y").warning("careful")
    logging.getLogger("xmppd.y").info("quiet")
    assert first.getvalue() == ""
    assert second.getvalue().rstrip().endswith("WARNING xmppd.y: careful")


def test_setup_leaves_a_configured_root_alone(bare_root):
    other = logging.NullHandler()
    bare_root.handlers = [other]
    assert logs.setup("debug", "json", io.StringIO()) is None
    assert bare_root.handlers == [other]
