"""The per-address admission policy without sockets: the pre-auth connection cap with
eviction of the longest idle connection, and the failed-login throttle on a fake clock."""

from __future__ import annotations

import pytest

from xmppd.core.config import Limits
from xmppd.transport.connections import (
    MAX_TRUSTED,
    TRUSTED_FOR_S,
    AuthThrottle,
    Connections,
    address_text,
)

A = ("198.51.100.1", 4000)
B = ("198.51.100.2", 4000)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeStream:
    def __init__(self, peer, evictable: bool = True) -> None:
        self.peer = peer
        self.evictable = evictable
        self.evicted = False

    def evict(self) -> None:
        self.evicted = True


# -- Connections --------------------------------------------------------------------------


def test_the_longest_idle_unauthenticated_connection_makes_room():
    conns = Connections(3)
    first, second, third = (FakeStream(A) for _ in range(3))
    for s in (first, second, third):
        assert conns.opened(s)
    conns.active(first)  # first spoke last: second is now the longest idle
    newcomer = FakeStream(A)
    assert conns.opened(newcomer)
    assert second.evicted and not first.evicted and not third.evicted
    assert conns.preauth_count(A[0]) == 3
    conns.closed(second)  # the evicted stream goes away later: nothing left to free
    assert conns.preauth_count(A[0]) == 3 and len(conns.streams) == 3


def test_authenticated_streams_do_not_count_and_are_never_evicted():
    conns = Connections(2)
    sessions = [FakeStream(A) for _ in range(10)]
    for s in sessions:
        assert conns.opened(s)
        conns.authenticated(s)
    assert conns.preauth_count(A[0]) == 0
    waiting = [FakeStream(A) for _ in range(3)]
    for s in waiting:
        assert conns.opened(s)
    assert waiting[0].evicted and not any(s.evicted for s in sessions)
    for s in sessions:
        conns.closed(s)
    assert conns.preauth_count(A[0]) == 2 and len(conns.streams) == 3


def test_other_addresses_are_not_touched_and_non_evictable_streams_are_refused():
    conns = Connections(1)
    s2s = FakeStream(A, evictable=False)  # e.g. a server-to-server stream
    other = FakeStream(B)
    assert conns.opened(s2s) and conns.opened(other)
    assert not conns.opened(FakeStream(A))  # nothing at A may be closed: refused
    assert not s2s.evicted and not other.evicted
    conns.closed(s2s)
    assert conns.opened(FakeStream(A))
    assert conns.preauth_count(B[0]) == 1


def test_no_cap_with_zero():
    conns = Connections(0)
    streams = [FakeStream(A) for _ in range(50)]
    assert all(conns.opened(s) for s in streams)
    assert not any(s.evicted for s in streams)


def test_address_text():
    assert address_text(("192.0.2.1", 5222)) == "192.0.2.1:5222"
    assert address_text(("2001:db8::1", 5222, 0, 0)) == "[2001:db8::1]:5222"
    assert address_text(None) == "-"


# -- AuthThrottle: per (address, username) backoff -------------------------------------------


def throttle(clock: Clock, **kw) -> AuthThrottle:
    kw.setdefault("backoff_after", 3)
    kw.setdefault("backoff_max_s", 8.0)
    kw.setdefault("forget_after_s", 600.0)
    kw.setdefault("usernames_per_min", 5)
    return AuthThrottle(clock=clock, **kw)


def test_backoff_doubles_up_to_the_cap_for_that_pair_only():
    clock = Clock()
    t = throttle(clock)
    waits = []
    for _ in range(8):
        waits.append(t.delay(A, "mallory"))
        t.failed(A, "mallory")
        clock.now += 100  # answered long ago: only the backoff counts
    assert waits == [0, 0, 0, 1, 2, 4, 8, 8]
    assert t.delay(A, "alice") == 0  # another user from the same address
    assert t.delay(B, "mallory") == 0  # the same user from another address
    assert t.allowed(A, "alice") and t.allowed(A, "mallory")  # slowed, never refused


def test_parallel_attempts_queue_behind_each_other():
    clock = Clock()
    t = throttle(clock)
    for _ in range(4):
        t.failed(A, "mallory")
    assert [t.delay(A, "mallory") for _ in range(3)] == [2, 4, 6]


def test_success_and_time_forget_the_failures():
    clock = Clock()
    t = throttle(clock)
    for _ in range(5):
        t.failed(A, "alice")
    assert t.delay(A, "alice") > 0
    t.succeeded(A, "alice")
    assert t.delay(A, "alice") == 0
    for _ in range(5):
        t.failed(A, "bob")
    clock.now += 601
    assert t.delay(A, "bob") == 0
    t.failed(B, "carol")  # any failure prunes what is too old
    assert t.pairs() == 1
    t.failed(A, "bob")  # counting starts again
    assert t.delay(A, "bob") == 0


def test_backoff_off_with_zero():
    clock = Clock()
    t = throttle(clock, backoff_after=0)
    for _ in range(100):
        t.failed(A, "mallory")
    assert t.delay(A, "mallory") == 0


# -- AuthThrottle: password spraying per address -----------------------------------------------


def test_many_usernames_failing_from_one_address_is_refused():
    clock = Clock()
    t = throttle(clock, usernames_per_min=3)
    for _ in range(50):
        t.failed(A, "mallory")  # one username, however often: not spraying
    assert t.allowed(A, "alice")
    t.failed(A, "u1")
    t.failed(A, "u2")
    assert not t.allowed(A, "alice") and not t.allowed(A, None)
    assert t.allowed(B, "alice")  # other addresses are not affected
    clock.now += 61  # a minute later the window has room again
    assert t.allowed(A, "alice")


def test_users_who_logged_in_from_the_address_are_not_refused():
    clock = Clock()
    t = throttle(clock, usernames_per_min=2)
    t.succeeded(A, "alice")
    clock.now += 3600
    t.failed(A, "u1")
    t.failed(A, "u2")
    assert t.allowed(A, "alice") and not t.allowed(A, "bob")
    clock.now += TRUSTED_FOR_S
    t.failed(A, "u3")
    t.failed(A, "u4")
    assert not t.allowed(A, "alice")  # trust expires


def test_trusted_pairs_are_bounded():
    clock = Clock()
    t = throttle(clock)
    for i in range(MAX_TRUSTED + 10):
        t.succeeded(("203.0.113.1", i), f"user{i}")
    assert len(t._trusted) + len(t._trusted_old) <= MAX_TRUSTED


def test_from_limits():
    limits = Limits(auth_backoff_after_failures=7, auth_backoff_max_s=9,
                    auth_failures_forgotten_after_s=11, auth_failed_usernames_per_ip_per_min=13)
    t = AuthThrottle.from_limits(limits)
    assert (t.backoff_after, t.backoff_max_s, t.forget_after_s, t.usernames_per_min) == (
        7, 9, 11, 13)


@pytest.mark.parametrize("peer", [None])
def test_unknown_peer_is_never_throttled(peer):
    t = throttle(Clock())
    t.failed(peer, "x")
    assert t.allowed(peer, "x") and t.delay(peer, "x") == 0
