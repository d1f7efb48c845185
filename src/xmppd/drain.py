"""Graceful drain: a node (or a single-process or worker server) leaves without dropping
its users (``xmppd drain``, the control command ``drain``, SIGUSR1).

1. The listeners close: no new connection (a cluster node is marked draining in Redis,
   so ``xmppd cluster status`` shows it).
2. The core event ``server-draining`` fires (``sm`` from then on detaches a resumable
   session whose stream the server closes, instead of ending it).
3. Unauthenticated client streams get ``<system-shutdown/>`` at once; the bound local
   sessions get it spread evenly over ``spread_s`` seconds (their clients reconnect to the
   other nodes in a trickle, not a storm).  Each transport says it its own way: a TCP or
   WebSocket stream error, a BOSH ``<body type='terminate' condition='system-shutdown'/>``.
4. The node keeps serving (cluster links, s2s, detached sessions) until no local session
   is left (resumed elsewhere, or ended) or ``timeout_s`` passed since the start.
5. Then :meth:`Server.stop` as for SIGTERM: detached sessions end as at the end of their
   window (unacknowledged messages to offline storage, unavailable presence), pending
   storage writes finish, s2s and component links close, a cluster node leaves Redis and
   purges its own rows, and ``xmppd run`` exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xmppd.server import Server

log = logging.getLogger(__name__)

#: How often the spread closes the streams whose turn came, and the end is checked.
STEP_S = 0.05
#: Unbound client streams (still negotiating) of these kinds are closed at once.
CLIENT_KINDS = ("c2s", "websocket")
TEXT = "this server is shutting down: connect again (to another node)"


class Drain:
    """One drain of ``server``: started by :meth:`run`, ``finished`` once it is over."""

    def __init__(self, server: Server, timeout_s: float, spread_s: float) -> None:
        self.server = server
        self.timeout_s = timeout_s
        self.spread_s = min(spread_s, timeout_s)
        self.started = time.monotonic()
        self.asked = 0  # sessions told to reconnect
        self.finished = asyncio.Event()

    def local_sessions(self) -> list[Any]:
        """The sessions held here (attached or detached), not other nodes' replicas."""
        return [s for s in self.server.router.sessions.all() if not s.remote]

    def status(self) -> dict[str, Any]:
        """For ``xmppd status`` (and the control command's answer)."""
        return {"elapsed_s": round(time.monotonic() - self.started, 1),
                "timeout_s": self.timeout_s, "spread_s": self.spread_s,
                "asked": self.asked, "sessions_left": len(self.local_sessions()),
                "finished": self.finished.is_set()}

    async def run(self) -> None:
        server = self.server
        log.warning("draining: no new connections; clients are asked to reconnect over "
                    "%gs; ending in at most %gs", self.spread_s, self.timeout_s)
        server.close_listeners()
        node = server.node
        if node is not None and hasattr(node, "mark_draining"):
            node.mark_draining(self.timeout_s)
        await server.hooks.fire("server-draining", server)
        for stream in list(server.streams):
            if stream.kind in CLIENT_KINDS and getattr(stream, "session", None) is None:
                stream.stream_error("system-shutdown", TEXT)
        await self._spread(self.local_sessions())
        deadline = self.started + self.timeout_s
        while self.local_sessions() and time.monotonic() < deadline:
            await asyncio.sleep(STEP_S * 2)
        left = len(self.local_sessions())
        log.warning("drain over after %.1fs: %d session(s) left to end",
                    time.monotonic() - self.started, left)
        self.finished.set()

    async def _spread(self, sessions: list[Any]) -> None:
        """Tell ``sessions`` to go, the i-th at ``spread_s * i / n`` from now."""
        count = len(sessions)
        begin = time.monotonic()
        for i, session in enumerate(sessions):
            due = begin + self.spread_s * i / count
            wait = due - time.monotonic()
            if wait > STEP_S / 2:  # closer ones go in this step (one write per iteration)
                await asyncio.sleep(wait)
            if server_holds(self.server, session):
                self.asked += 1
                session.stream_error("system-shutdown", TEXT)


def server_holds(server: Server, session: Any) -> bool:
    """Whether ``session`` is still the one bound to its JID here."""
    return server.router.sessions.get(session.jid) is session
