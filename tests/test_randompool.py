"""The pooled random source: numbers in range, never repeated from one pool, a fresh pool
in a forked child."""

from __future__ import annotations

import os

from xmppd import randompool
from xmppd.randompool import random_bytes, random_u64


def test_random_u64_spans_its_range_and_refills():
    numbers = [random_u64() for _ in range(3 * randompool._POOL_BYTES // 8)]  # refills twice
    assert all(0 <= n < 2**64 for n in numbers)
    assert len(set(numbers)) == len(numbers)  # a repeat would mean a pool given twice
    assert max(numbers) >= 2**63 and min(numbers) < 2**63


def _drawn_in_a_child(reset_in_parent: bool) -> bytes:
    """A forked child's first random_u64 (8 bytes) and random_bytes(8); with
    ``reset_in_parent`` the parent's pools are emptied at the fork too, so that both
    refill afterwards."""
    read, write = os.pipe()
    pid = os.fork()
    if pid and reset_in_parent:
        randompool._reset()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, random_u64().to_bytes(8, "big") + random_bytes(8))
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 16)
    os.close(read), os.close(write)
    return child


def test_forked_child_does_not_reuse_the_parents_pool():
    random_u64(), random_bytes(1)  # both pools filled
    child = _drawn_in_a_child(reset_in_parent=False)
    assert int.from_bytes(child[:8], "big") != random_u64()
    assert child[8:] != random_bytes(8)


def test_a_forked_child_and_its_parent_refill_with_different_bytes():
    """Both refill after the fork: OpenSSL's generator must not give them the same."""
    child = _drawn_in_a_child(reset_in_parent=True)
    assert int.from_bytes(child[:8], "big") != random_u64()
    assert child[8:] != random_bytes(8)
