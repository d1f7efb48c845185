"""Unpredictable bytes for ids made on the event-loop thread, from a pool filled by
OpenSSL's CSPRNG (``ssl.RAND_bytes``, the generator TLS takes its keys from, seeded by the
kernel).

Ids are needed per stream header and per archived message.  Not ``os.urandom``: each
``getrandom`` system call releases the GIL, which another thread (the storage writer) may
then hold until the switch interval; ``RAND_bytes`` keeps it, and fills 4 KiB in 2-5 µs
against 11-17 µs (measured here, with and without a busy storage thread).  One call for
many ids besides.  A forked child starts a fresh pool (never its parent's), and OpenSSL
reseeds in a child by itself (tested).
"""

from __future__ import annotations

import os
import ssl
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
            _pool, pos = ssl.RAND_bytes(max(_POOL_BYTES, n)), 0
        _pos = pos + n
        return _pool[pos:pos + n]


def random_u64() -> int:
    """A random integer in ``[0, 2**64)`` (cheaper than ``random_bytes`` then a
    conversion: one per archived message)."""
    try:
        return _numbers.pop()
    except IndexError:  # two threads may both refill: more numbers, none given twice
        _numbers.frombytes(ssl.RAND_bytes(_POOL_BYTES))
        return _numbers.pop()
