"""Per-installation secrets in the data directory, created owner-only on first use."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def load_or_create(path: Path, size: int = 32) -> bytes:
    """The secret in ``path``; a new random one of ``size`` bytes when the file does not
    exist yet, created 0600 (never world-readable, never overwritten).

    Several processes may start at once (``xmppd run --workers N``): the new secret is
    written whole to a private temporary file first and then linked into place, which
    fails if another process got there first, and then its secret is the one used.  So
    every process ends up with the same secret, and nobody reads a half-written file."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    secret = secrets.token_bytes(size)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(secret)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return path.read_bytes()  # another process created it meanwhile: theirs
        return secret
    finally:
        tmp.unlink(missing_ok=True)
