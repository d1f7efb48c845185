"""Event-loop lag: a timer that measures how late it fires.  A loop busy with other work
(a long parse, a slow handler, a GIL-holding thread) runs the timer late by just as much."""

from __future__ import annotations

import asyncio

from xmppd.metrics.histogram import Histogram

#: Upper bounds in seconds: a healthy loop is well under a millisecond late.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class LoopLag:
    """Every ``interval`` seconds, how late the timer ran: ``last`` and a histogram."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.histogram = Histogram(LAG_BUCKETS)
        self.last = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.stop()
        self._loop = loop
        self._schedule(loop.time())

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self, now: float) -> None:
        self._due = now + self.interval
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        now = self._loop.time()
        # A timer may run up to the clock's resolution early: that is no lag.
        lag = max(0.0, now - self._due)
        self.last = lag
        self.histogram.observe(lag)
        self._schedule(now)
