"""The running server's end of the control socket.

Only the user the server runs as (or root) may connect: the socket is created owner-only
inside the owner-only data directory, and the peer's credentials are checked too.  Each
command is a coroutine function (or plain function) taking keyword arguments; what it
returns must be JSON-serializable.  A :class:`CommandError` becomes an error answer with
its text; any other exception is logged and answered with a generic error.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from xmppd.control.protocol import MAX_LINE, decode, encode

log = logging.getLogger(__name__)

Command = Callable[..., Any]


class CommandError(Exception):
    """A command refused or failed in a way the operator should read (the text says how)."""


class ControlServer:
    """Serves ``commands`` on the Unix socket at ``path``."""

    def __init__(self, path: Path, commands: Mapping[str, Command]) -> None:
        self.path = path
        self.commands = commands
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        # A socket file left by a server that died is stale: the data-directory lock
        # guarantees no other server of this directory is running.
        if self.path.is_socket():
            self.path.unlink()
        old_umask = os.umask(0o177)  # created owner-only, never briefly open to others
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_LINE
            )
        finally:
            os.umask(old_umask)
        log.info("control socket at %s", self.path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not _peer_allowed(writer.get_extra_info("socket")):
                writer.write(encode({"ok": False, "error": "permission denied"}))
                return
            line = await asyncio.wait_for(reader.readline(), 30)
            writer.write(encode(await self.answer(line)))
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    async def answer(self, line: bytes) -> dict[str, Any]:
        """The answer to one request line."""
        try:
            request = decode(line)
            name = request["command"]
            args = request.get("args") or {}
            if not isinstance(name, str) or not isinstance(args, dict):
                raise ValueError
        except (ValueError, KeyError):
            return {"ok": False, "error": "malformed request"}
        command = self.commands.get(name)
        if command is None:
            return {"ok": False, "error": f"unknown command {name!r}"}
        try:
            result = command(**args)
            if inspect.isawaitable(result):
                result = await result
        except CommandError as exc:
            return {"ok": False, "error": str(exc)}
        except TypeError as exc:
            return {"ok": False, "error": f"bad arguments for {name}: {exc}"}
        except Exception:
            log.exception("control command %s failed", name)
            return {"ok": False, "error": f"{name} failed; see the server log"}
        return {"ok": True, "result": result}


def _peer_allowed(sock: socket.socket | None) -> bool:
    """The connecting process runs as our user or as root (Linux SO_PEERCRED)."""
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return True  # the owner-only socket file is the check there
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid in (0, os.getuid())
