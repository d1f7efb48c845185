"""Log output for ``xmppd``: plain text lines or JSON lines (``[server] log_format``).

A JSON line holds ``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger`` and
``message``, then ``exc`` (the formatted traceback) when there is one, and every extra
field the call passed (``log.info("...", extra={"jid": "a@b"})``), converted to a string
when it is not a JSON value.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: The attributes every LogRecord has: anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JSONFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        entry: dict[str, Any] = {
            "time": f"{seconds}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in entry:
                entry[name] = value
        return json.dumps(entry, ensure_ascii=False, default=str)


def setup(level: str, fmt: str = "text", stream: Any = None) -> logging.Handler | None:
    """Send the root logger's records at ``level`` and above to ``stream`` (stderr) in
    ``fmt`` ("text" or "json").  Like :func:`logging.basicConfig`, it leaves a root logger
    that something else (an embedding program, pytest) gave handlers alone: None then; a
    handler an earlier call installed is replaced."""
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "_xmppd", False)]
    if len(ours) != len(root.handlers):
        return None
    for old in ours:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler._xmppd = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    return handler
