"""Per-installation secrets in the data directory, created owner-only on first use."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def load_or_create(path: Path, size: int = 32) -> bytes:
    """The secret in ``path``; a new random one of ``size`` bytes when the file does not
    exist yet, created 0600 at once (``O_EXCL``: never world-readable, never overwritten)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        secret = secrets.token_bytes(size)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secret)
        return secret
