"""Per-address connection policy shared by every listener: the open streams, the cap on
unauthenticated connections from one address, and the throttling of failed authentications.

Both are built so that an attacker behind an address hurts the innocent users behind the
same address (a NAT, a university, a mobile carrier) as little as possible:

- :class:`Connections` caps only connections that have not authenticated yet; when the cap
  is reached, the connection from that address that has been idle longest is closed to make
  room (when it is a client stream), instead of refusing the new one.
- :class:`AuthThrottle` slows down guessing per (address, username) with a growing delay,
  never a refusal, and refuses only password spraying (many usernames failing from one
  address), except for usernames that logged in successfully from that address recently.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

log = logging.getLogger(__name__)

#: A successful login from an address keeps that (address, username) pair exempt from the
#: password-spraying refusal for this long (a day), so regular users behind a shared
#: address keep logging in while someone sprays passwords from it.
TRUSTED_FOR_S = 24 * 3600.0
#: At most this many trusted pairs, and this many failing pairs, are remembered (the
#: oldest are forgotten first), whatever an attack from many addresses costs.
MAX_TRUSTED = 100_000
MAX_PAIRS = 200_000


def _address(peer: tuple[str, int] | None) -> str:
    return peer[0] if peer else "?"


def address_text(peer: tuple[str, int] | None) -> str:
    """``host:port`` for log lines (``[v6]:port`` for IPv6, ``-`` when unknown)."""
    if not peer:
        return "-"
    host = peer[0]
    return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"


def count(table: dict[str, int], key: str) -> None:
    """One more ``key`` in a table of counters (read by :mod:`xmppd.metrics`)."""
    table[key] = table.get(key, 0) + 1


class Traffic:
    """The counters of one stream kind (``c2s``, ``s2s_in``, ``s2s_out``, ``component``...):
    plain ints the streams add to, read when metrics are scraped.  ``limit_hits`` (limit
    name -> times it fired) is shared by every kind of one server."""

    __slots__ = ("kind", "opened", "closed", "bytes_in", "bytes_out", "stream_errors",
                 "limit_hits", "unflushed")

    def __init__(self, kind: str, limit_hits: dict[str, int] | None = None) -> None:
        self.kind = kind
        self.opened = 0  # connections accepted (or made, outbound)
        self.closed = 0  # ... and gone again: open = opened - closed
        self.bytes_in = 0
        self.bytes_out = 0
        self.stream_errors: dict[str, int] = {}  # condition -> stream errors we sent
        self.limit_hits = {} if limit_hits is None else limit_hits
        #: the streams of this kind with output waiting for the end of the loop iteration
        #: (XMLStream.send_bytes): one callback flushes them all, not one per stream
        self.unflushed: list[Any] | None = None

    def limit(self, name: str) -> None:
        """The limit ``name`` (its config key) fired."""
        count(self.limit_hits, name)

    def flush_all(self) -> None:
        """Write what each waiting stream buffered in this loop iteration (one write each)."""
        streams, self.unflushed = self.unflushed, None
        for stream in streams or ():
            try:
                stream.flush()
            except Exception:  # one failing transport must not keep the others unflushed
                log.exception("flushing output to %s", address_text(stream.peer))


class Connections:
    """The open streams of a server and the ``max_preauth_connections_per_ip`` cap (0: none).

    Only streams that have not authenticated count toward the cap (:meth:`authenticated`
    takes a stream out).  A stream whose class sets ``evictable`` (client streams) may be
    closed to make room for a new connection from its address: the one idle longest
    (:meth:`active` moves a stream to the back of that queue).  Only when no such stream
    exists is the new connection refused.
    """

    def __init__(self, max_preauth_per_ip: int) -> None:
        self.max_preauth_per_ip = max_preauth_per_ip
        # A dict as an ordered set: a set's table is 2-8 times the size of its contents
        # (it grows fourfold), a dict's ~1.5-3 times, on ~30-50 bytes per open stream.
        self.streams: dict[Any, None] = {}
        # address -> its unauthenticated streams, least recently active first
        self._preauth: dict[str, dict[Any, None]] = defaultdict(dict)
        # What the metrics read (xmppd.metrics.collector): counters by stream kind, limit
        # hits by limit name, logins by (stream kind, mechanism, outcome).
        self.limit_hits: dict[str, int] = {}
        self.traffic: dict[str, Traffic] = {}
        self.logins: dict[tuple[str, str, str], int] = {}

    def traffic_for(self, kind: str) -> Traffic:
        """The counters of the streams of ``kind`` (created on first use)."""
        traffic = self.traffic.get(kind)
        if traffic is None:
            traffic = self.traffic[kind] = Traffic(kind, self.limit_hits)
        return traffic

    def login(self, kind: str, mechanism: str, outcome: str) -> None:
        """One authentication of a ``kind`` stream with ``mechanism`` ended: ``success``,
        ``failure`` or ``refused`` (password spraying).  ``mechanism`` must be one the
        server knows (a client-chosen name would let a client grow the table)."""
        key = (kind, mechanism, outcome)
        self.logins[key] = self.logins.get(key, 0) + 1

    def limit(self, name: str) -> None:
        """The limit ``name`` (its config key) fired."""
        count(self.limit_hits, name)

    def opened(self, stream: Any) -> bool:
        """Count ``stream`` in; False (and not counted) if its address is at the cap and no
        idle unauthenticated client connection of that address can make room."""
        ip = _address(stream.peer)
        waiting = self._preauth[ip]
        limit = self.max_preauth_per_ip
        if limit and len(waiting) >= limit and not self._evict(ip, waiting, limit):
            self.limit("max_preauth_connections_per_ip")
            log.warning("limit max_preauth_connections_per_ip (%d) reached for %s: refused",
                        limit, ip)
            if not waiting:
                del self._preauth[ip]
            return False
        waiting[stream] = None
        self.streams[stream] = None
        return True

    def _evict(self, ip: str, waiting: dict[Any, None], limit: int) -> bool:
        victim = next((s for s in waiting if getattr(s, "evictable", False)), None)
        if victim is None:
            return False
        log.warning("limit max_preauth_connections_per_ip (%d) reached for %s: closing the "
                    "longest idle unauthenticated connection %s", limit, ip,
                    address_text(victim.peer))
        del waiting[victim]  # no longer counted, even while its closing handshake runs
        self.limit("max_preauth_connections_per_ip")
        victim.evict()
        return True

    def active(self, stream: Any) -> None:
        """``stream`` (not yet authenticated) received data: it is the last to be evicted."""
        peer = stream.peer  # (called for every read before authentication: kept lean)
        waiting = self._preauth.get(peer[0] if peer else "?")
        if waiting is not None and len(waiting) > 1 and stream in waiting:
            del waiting[stream]
            waiting[stream] = None

    def authenticated(self, stream: Any) -> None:
        """``stream`` authenticated: it no longer counts toward the pre-auth cap."""
        self._forget(stream)

    def closed(self, stream: Any) -> None:
        """The transport of ``stream`` is gone: free its slot (if it was counted)."""
        if stream not in self.streams:
            return
        del self.streams[stream]
        self._forget(stream)

    def preauth_count(self, ip: str) -> int:
        """How many unauthenticated connections ``ip`` has open."""
        waiting = self._preauth.get(ip)
        return len(waiting) if waiting else 0

    def _forget(self, stream: Any) -> None:
        ip = _address(stream.peer)
        waiting = self._preauth.get(ip)
        if waiting is None:
            return
        waiting.pop(stream, None)
        if not waiting:
            del self._preauth[ip]


class _Pair:
    """Failed logins of one (address, username)."""

    __slots__ = ("failures", "last_failure", "next_answer")

    def __init__(self) -> None:
        self.failures = 0
        self.last_failure = 0.0
        self.next_answer = 0.0  # no answer for this pair before this time


class AuthThrottle:
    """Throttling of failed authentications (the ``[limits]`` keys in brackets; 0 turns
    each off).

    - Per (address, username): after ``backoff_after`` failures [auth_backoff_after_failures]
      the answer to each further attempt for that pair is delayed 1 s, 2 s, 4 s... up to
      ``backoff_max_s`` [auth_backoff_max_s].  Attempts in parallel queue behind each other.
      A pair's failures are forgotten ``forget_after_s`` [auth_failures_forgotten_after_s]
      after its last failure, or when it logs in.
    - Per address: once ``usernames_per_min`` [auth_failed_usernames_per_ip_per_min]
      different usernames failed from it within a minute (password spraying), attempts
      from it are refused with ``temporary-auth-failure`` — except for usernames that
      logged in successfully from that address within the last half of
      :data:`TRUSTED_FOR_S` (up to the whole of it).
    """

    def __init__(
        self,
        *,
        backoff_after: int = 5,
        backoff_max_s: float = 60.0,
        forget_after_s: float = 900.0,
        usernames_per_min: int = 20,
        clock: Any = time.monotonic,
    ) -> None:
        self.backoff_after = backoff_after
        self.backoff_max_s = backoff_max_s
        self.forget_after_s = forget_after_s
        self.usernames_per_min = usernames_per_min
        self._clock = clock
        # least recently failed first, so that forgetting is a walk from the front
        self._pairs: dict[tuple[str, str], _Pair] = {}
        # address -> {username: time of its last failure}, least recent first
        self._usernames: dict[str, dict[str, float]] = {}
        # hash((address, username)) of the logins of the current and the previous half of
        # TRUSTED_FOR_S.  Kept for every account that logs in, so kept small: the hash, not
        # the strings (hash() is salted per process, so nobody can aim a username at
        # another's entry), in two generations instead of a time per entry (an entry is
        # trusted for between a half and the whole of TRUSTED_FOR_S); dicts used as sets,
        # which take about half the memory of sets this large.
        self._trusted: dict[int, None] = {}
        self._trusted_old: dict[int, None] = {}
        self._trusted_gen = int(clock() // (TRUSTED_FOR_S / 2))
        #: limit name -> times it fired (read by xmppd.metrics)
        self.limit_hits: dict[str, int] = {}

    @classmethod
    def from_limits(cls, limits: Any, clock: Any = time.monotonic) -> AuthThrottle:
        throttle = cls(clock=clock)
        throttle.apply_limits(limits)
        return throttle

    def apply_limits(self, limits: Any) -> None:
        """Take the ``[limits]`` values (at start, and at a live reload: the failures
        counted so far are kept)."""
        self.backoff_after = limits.auth_backoff_after_failures
        self.backoff_max_s = limits.auth_backoff_max_s
        self.forget_after_s = limits.auth_failures_forgotten_after_s
        self.usernames_per_min = limits.auth_failed_usernames_per_ip_per_min

    # -- the per-address spraying ceiling -----------------------------------------------------

    def allowed(self, peer: tuple[str, int] | None, username: str | None = None) -> bool:
        """May ``peer`` try to log in as ``username`` now (False: password spraying from
        its address, and ``username`` has not logged in from there recently)?"""
        limit = self.usernames_per_min
        if not limit or not peer:
            return True
        ip = peer[0]
        failed = self._usernames.get(ip)
        if not failed:
            return True
        now = self._clock()
        cutoff = now - 60
        while failed and next(iter(failed.values())) < cutoff:
            del failed[next(iter(failed))]
        if not failed:
            del self._usernames[ip]
            return True
        if len(failed) < limit:
            return True
        self._age_trusted(now)
        user = username or ""
        digest = hash((ip, user))
        if digest in self._trusted or digest in self._trusted_old:
            return True
        count(self.limit_hits, "auth_failed_usernames_per_ip_per_min")
        log.warning("limit auth_failed_usernames_per_ip_per_min (%d) reached for %s: "
                    "refused username=%s", limit, ip, _printable(user))
        return False

    # -- the per-(address, username) backoff ------------------------------------------------------

    def delay(self, peer: tuple[str, int] | None, username: str | None) -> float:
        """Seconds to hold the answer to this attempt (0: answer now).  Reserves the
        pair's next answer slot, so parallel attempts are spaced out too."""
        if not self.backoff_after or not peer:
            return 0.0
        pair = self._pairs.get((peer[0], username or ""))
        if pair is None:
            return 0.0
        now = self._clock()
        if now - pair.last_failure > self.forget_after_s:
            return 0.0  # forgotten (it is dropped at the next failure or prune)
        excess = pair.failures - self.backoff_after
        if excess < 0:
            return 0.0
        step = min(2.0 ** min(excess, 30), self.backoff_max_s)
        answer_at = max(now, pair.next_answer) + step
        pair.next_answer = answer_at
        wait = answer_at - now
        count(self.limit_hits, "auth_backoff_after_failures")
        log.info("limit auth_backoff_after_failures (%d) reached for %s: answer delayed "
                 "%gs username=%s", self.backoff_after, peer[0], round(wait, 3),
                 _printable(username or ""))
        return wait

    # -- outcomes ---------------------------------------------------------------------------------

    def failed(self, peer: tuple[str, int] | None, username: str | None = None) -> None:
        """Count one failed authentication of ``username`` from ``peer``'s address."""
        if not peer:
            return
        ip, user, now = peer[0], username or "", self._clock()
        self._prune(now)
        key = (ip, user)
        pair = self._pairs.pop(key, None)
        if pair is None or now - pair.last_failure > self.forget_after_s:
            pair = _Pair()
        pair.failures += 1
        pair.last_failure = now
        self._pairs[key] = pair  # to the back: the most recent failure
        if self.usernames_per_min:
            failed = self._usernames.pop(ip, None) or {}
            failed.pop(user, None)
            failed[user] = now
            self._usernames[ip] = failed  # to the back, as for the pairs

    def succeeded(self, peer: tuple[str, int] | None, username: str) -> None:
        """``username`` logged in from ``peer``: its failures there are forgotten, and it is
        exempt from the spraying refusal at that address for half to all of
        :data:`TRUSTED_FOR_S`."""
        if not peer:
            return
        key = (peer[0], username)
        self._pairs.pop(key, None)
        self._age_trusted(self._clock())
        if len(self._trusted) >= MAX_TRUSTED // 2:  # bounded: an early new generation
            self._new_trusted_generation()
        self._trusted[hash(key)] = None

    def _age_trusted(self, now: float) -> None:
        """Start a new generation of trusted logins at each half of TRUSTED_FOR_S."""
        gen = int(now // (TRUSTED_FOR_S / 2))
        if gen != self._trusted_gen:
            self._new_trusted_generation()
            if gen != self._trusted_gen + 1:  # a whole period without a login: forget both
                self._trusted_old = {}
            self._trusted_gen = gen

    def _new_trusted_generation(self) -> None:
        self._trusted_old = self._trusted
        self._trusted = {}

    def _prune(self, now: float) -> None:
        """Forget what is too old, walking from the front (both tables are kept in the
        order of the last failure), and the oldest pairs beyond :data:`MAX_PAIRS`."""
        pairs = self._pairs
        cutoff = now - self.forget_after_s
        while pairs:
            key = next(iter(pairs))
            if pairs[key].last_failure >= cutoff and len(pairs) < MAX_PAIRS:
                break
            del pairs[key]
        usernames = self._usernames
        cutoff = now - 60
        while usernames:
            ip = next(iter(usernames))
            if next(reversed(usernames[ip].values())) >= cutoff:
                break
            del usernames[ip]

    def pairs(self) -> int:
        """How many (address, username) pairs are remembered (for tests and stats)."""
        return len(self._pairs)


def _printable(text: str) -> str:
    """Client-chosen text for one log line: control characters and spaces replaced."""
    return "".join(c if c.isprintable() and c != " " else "?" for c in text[:256]) or "-"
