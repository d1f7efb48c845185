"""The ``xmppd`` command's end of the control socket (blocking: the CLI has no loop)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from xmppd.control.protocol import MAX_LINE, decode, encode


class ControlUnavailable(Exception):
    """No server is running on this data directory (or its socket cannot be reached)."""


class ControlFailed(Exception):
    """The running server answered the command with an error (the text says which)."""


def call(path: Path, command: str, timeout: float = 30.0, **args: Any) -> Any:
    """Run ``command`` in the server listening on ``path``; returns its result."""
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError as exc:  # pragma: no cover - no Unix sockets on this platform
        raise ControlUnavailable(str(exc)) from None
    with sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, NotADirectoryError, ConnectionRefusedError):
            raise ControlUnavailable(f"no server is running (no control socket at {path})") from None
        except PermissionError:
            raise ControlUnavailable(f"{path}: permission denied (run as the server's user)") from None
        sock.sendall(encode({"command": command, "args": args}))
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if len(data) > MAX_LINE:
                raise ControlFailed("answer too long")
    if not data:
        raise ControlFailed("the server closed the control connection without answering")
    answer = decode(data)
    if not answer.get("ok"):
        raise ControlFailed(str(answer.get("error", "failed")))
    return answer.get("result")
