"""Per-address connection policy shared by every listener: the open streams, the cap on
connections from one address, and the throttling of failed authentications."""

from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from typing import Any

log = logging.getLogger(__name__)


def _address(peer: tuple[str, int] | None) -> str:
    return peer[0] if peer else "?"


class Connections:
    """The open streams of a server and the ``max_connections_per_ip`` cap (0: none)."""

    def __init__(self, max_per_ip: int) -> None:
        self.max_per_ip = max_per_ip
        self.streams: set[Any] = set()
        self._per_ip: dict[str, int] = defaultdict(int)

    def opened(self, stream: Any) -> bool:
        """Count ``stream`` in; False (and not counted) if its address is over the cap."""
        ip = _address(stream.peer)
        limit = self.max_per_ip
        if limit and self._per_ip[ip] >= limit:
            log.warning("limit max_connections_per_ip (%d) reached for %s: refused", limit, ip)
            return False
        self._per_ip[ip] += 1
        self.streams.add(stream)
        return True

    def closed(self, stream: Any) -> None:
        """The transport of ``stream`` is gone: free its slot (if it was counted)."""
        if stream not in self.streams:
            return
        self.streams.discard(stream)
        ip = _address(stream.peer)
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]


class AuthThrottle:
    """Per-address throttling of failed authentications: at most ``per_minute`` in a
    sliding one-minute window (0: no limit)."""

    def __init__(self, per_minute: int, clock: Any = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    def allowed(self, peer: tuple[str, int] | None) -> bool:
        """May ``peer`` try to authenticate now?"""
        limit = self.per_minute
        if not limit or not peer:
            return True
        window = self._failures.get(peer[0])
        if not window:
            return True
        cutoff = self._clock() - 60
        while window and window[0] < cutoff:
            window.popleft()
        if len(window) >= limit:
            log.warning("limit auth_failures_per_ip_per_min reached for %s", peer[0])
            return False
        return True

    def failed(self, peer: tuple[str, int] | None) -> None:
        """Count one failed authentication against ``peer``'s address."""
        if peer:
            self._failures[peer[0]].append(self._clock())
