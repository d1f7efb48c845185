"""Plain-list histograms and the loop-lag timer (the pieces the collector reads)."""

from __future__ import annotations

import asyncio
import time

from xmppd.metrics.histogram import Histogram, Histograms
from xmppd.metrics.lag import LoopLag


def test_observations_fall_in_the_first_bucket_whose_bound_holds_them():
    hist = Histogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 1.0, 7.0):
        hist.observe(v)
    # "le": a value equal to a bound belongs to that bucket; cumulative counts
    assert hist.cumulative() == [("0.1", 2), ("1.0", 4), ("+Inf", 5)]
    assert hist.count == 5 and abs(hist.total - 8.65) < 1e-9


def test_histograms_by_label_are_made_on_first_use():
    table = Histograms((1.0,))
    table.observe("read", 0.5)
    table.observe("read", 2.0)
    table.observe("write", 0.1)
    assert sorted(table.by) == ["read", "write"]
    assert table.by["read"].cumulative() == [("1.0", 1), ("+Inf", 2)]


def test_a_blocked_loop_shows_as_lag():
    async def main() -> LoopLag:
        lag = LoopLag(interval=0.01)
        lag.start(asyncio.get_running_loop())
        await asyncio.sleep(0.02)
        time.sleep(0.2)  # hold the loop: the timer due meanwhile runs late
        await asyncio.sleep(0.02)
        lag.stop()
        return lag

    lag = asyncio.run(main())
    assert lag.histogram.count >= 2
    assert lag.histogram.total >= 0.1  # at least most of the 0.2 s it was held
