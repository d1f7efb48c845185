"""asv suite: the routing hot path and the fan-outs, in one process (no sockets).

* ``TimeRouting``: 2 000 messages from one bound client stream to another's full JID
  (``benchmarks/hotpath.py``: tokenizer, ``from`` policy, router, hooks, output batching);
* ``TimeFanout``: one groupchat message to a room of 100 occupants, one PubSub item to 100
  subscribers (``benchmarks/bench_muc.py``, ``benchmarks/pubsub_fanout.py``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent.parent


def _sibling(name: str):
    """A module of ``benchmarks/`` (asv imports this suite without that folder on the path)."""
    if name in sys.modules:
        return sys.modules[name]
    sys.path.insert(0, str(_HERE))
    try:
        spec = importlib.util.spec_from_file_location(name, _HERE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(_HERE))


class TimeRouting:
    """CPU time of 2 000 routed messages (best of 3 runs inside)."""

    timeout = 120

    def track_ns_per_message(self) -> float:
        hotpath = _sibling("hotpath")
        with hotpath.runner() as runner:
            return runner.run(hotpath.measure(2_000, 3)) * 1e9

    track_ns_per_message.unit = "ns"


class TimeFanout:
    """Delivered stanzas per second to 100 recipients."""

    timeout = 120

    def track_muc_100(self) -> float:
        return asyncio.run(_sibling("bench_muc").run(100, 50))["once"]

    track_muc_100.unit = "stanzas/s"

    def track_pubsub_100(self) -> float:
        return asyncio.run(_sibling("pubsub_fanout").run(100, 20, "memory:"))["per_s"]

    track_pubsub_100.unit = "stanzas/s"
