"""The control protocol: one JSON request line, one JSON answer line.

Request: ``{"command": "kick", "args": {"jid": "alice@example.org"}}``.
Answer: ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "text"}``.
The socket lives in the data directory (owner-only) as ``control.sock``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SOCKET_NAME = "control.sock"
#: A request or answer line longer than this is refused (the online list of a big server
#: fits; a runaway peer does not make the server buffer without bound).
MAX_LINE = 16 * 1024 * 1024


def socket_path(data_dir: Path) -> Path:
    return data_dir / SOCKET_NAME


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """Parse one line; ValueError when it is not a JSON object."""
    value = json.loads(line)
    if not isinstance(value, dict):
        raise ValueError("a control message is a JSON object")
    return value
