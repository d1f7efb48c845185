"""Unpredictable bytes for ids made on the event-loop thread, from a pooled ``os.urandom``.

Ids are needed per stream header and per archived message.  Each ``getrandom`` system call
releases the GIL, which another thread (the storage writer) then takes, so the loop waits
for it up to the switch interval; one call for many ids avoids that.  The bytes are the
same as ``secrets`` would give; a forked child starts a fresh pool (never its parent's).
"""

from __future__ import annotations

import os
import threading

_POOL_BYTES = 4096
_lock = threading.Lock()
_pool = b""
_pos = 0


def _reset() -> None:
    global _pool, _pos
    _pool, _pos = b"", 0


os.register_at_fork(after_in_child=_reset)


def random_bytes(n: int) -> bytes:
    """``n`` random bytes (``n`` at most 4096)."""
    global _pool, _pos
    with _lock:
        pos = _pos
        if pos + n > len(_pool):
            _pool, pos = os.urandom(max(_POOL_BYTES, n)), 0
        _pos = pos + n
        return _pool[pos:pos + n]
