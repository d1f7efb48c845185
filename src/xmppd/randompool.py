"""Unpredictable bytes for ids made on the event-loop thread, from a pooled ``os.urandom``.

Ids are needed per stream header and per archived message.  Each ``getrandom`` system call
releases the GIL, which another thread (the storage writer) then takes, so the loop waits
for it up to the switch interval; one call for many ids avoids that.  The bytes are the
same as ``secrets`` would give; a forked child starts a fresh pool (never its parent's).
"""

from __future__ import annotations

import os
import threading
from array import array

_POOL_BYTES = 4096
_lock = threading.Lock()
_pool = b""
_pos = 0


#: 64-bit random numbers, taken with ``pop()`` (atomic: no lock)
_numbers = array("Q")


def _reset() -> None:
    global _pool, _pos
    _pool, _pos = b"", 0
    del _numbers[:]


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


def random_u64() -> int:
    """A random integer in ``[0, 2**64)`` (cheaper than ``random_bytes`` then a
    conversion: one per archived message)."""
    try:
        return _numbers.pop()
    except IndexError:  # two threads may both refill: more numbers, none given twice
        _numbers.frombytes(os.urandom(_POOL_BYTES))
        return _numbers.pop()
