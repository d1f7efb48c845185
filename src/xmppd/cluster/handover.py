"""Asking a peer and handing a session over to it (shared by worker and cluster nodes).

- **Requests.**  A module asks the same module on one peer (worker or node life) a
  question with :meth:`Requests.ask`: a ``request`` control record, answered by a
  ``reply`` record on the peer's link back.  The answer is handed to the caller's callback
  *synchronously, while the records that follow it are not yet read*: so what the peer
  sent after its answer (stanzas it forwards) finds the state the answer created.  No
  answer within the timeout, or the peer gone: the callback gets None; an answer that
  comes later is handed over with ``late=True`` (the caller decides what a late answer
  means; the peer cannot know it came too late).  On the peer, the core event
  ``cluster-request`` (a fold) finds the module's handler; it returns the answer or an
  awaitable of it.
- **Hand-over.**  A local session whose state was sent to a peer (stream management
  resumed there) is not ended: its transport becomes a :class:`Forwarder` (every stanza
  that still reaches it here goes on to the peer, by full JID) until the peer's bind of
  the same full JID arrives (newer by construction), which removes the session here
  quietly: no ``session-closed``, no unavailable presence.  A peer that goes, or a bind
  that never comes (:data:`TOMBSTONE_S`), ends it as a lost session instead.
- **Order.**  Stanzas the new holder itself routed to the old one before the hand-over
  come back forwarded; a newer stanza must not overtake them.  So the new holder's session
  first *holds* what reaches it other than from the old holder (:class:`Holding`), and
  asks the old holder for a ``drain`` marker: that goes on the link after everything sent
  there before, comes back (``drained``) after everything forwarded, and releases what
  was held, in order (or after :data:`DRAIN_S`, if the old holder went meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from xmppd.cluster import frames

if TYPE_CHECKING:
    from xmppd.cluster.node import Node
    from xmppd.core.session import Session
    from xmppd.xml.element import Element

log = logging.getLogger(__name__)

#: How long a session handed over waits here for the peer's bind before it is ended.
TOMBSTONE_S = 30.0
#: How long an unanswered request is remembered after its timeout (a late answer).
LATE_S = 60.0
#: How long a session taken over holds newer stanzas for its old holder's drain marker.
DRAIN_S = 5.0

OnReply = Callable[[Any, bool], None]


class Requests:
    """Questions to peers and their answers, by id (one table per node)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._ids = itertools.count(1)
        #: request id -> what waits for its answer
        self._waiting: dict[int, _Waiting] = {}

    def ask(self, peer: int, module: str, name: str, args: dict[str, Any], timeout: float,
            on_reply: OnReply) -> None:
        """Ask ``module`` on ``peer``; ``on_reply(answer, late)`` once: the answer, or None
        (no answer in ``timeout`` seconds, or the peer is not up) — and again with
        ``late=True`` if an answer comes after that."""
        loop = asyncio.get_running_loop()
        link = self.node.links.get(peer)
        if link is None or peer not in self.node.inbound:
            loop.call_soon(on_reply, None, False)
            return
        ident = next(self._ids)
        waiting = _Waiting(peer, on_reply)
        waiting.timer = loop.call_later(timeout, self._timed_out, ident)
        self._waiting[ident] = waiting
        link.control("request", {"id": ident, "module": module, "name": name, "args": args})

    def _timed_out(self, ident: int) -> None:
        waiting = self._waiting.get(ident)
        if waiting is None or waiting.expired:
            self._waiting.pop(ident, None)
            return
        waiting.expired = True
        waiting.timer = asyncio.get_running_loop().call_later(LATE_S, self._timed_out, ident)
        waiting.on_reply(None, False)

    def answered(self, peer: int, args: dict[str, Any]) -> None:
        """A ``reply`` record from ``peer``."""
        ident = args.get("id")
        waiting = self._waiting.get(ident) if isinstance(ident, int) else None
        if waiting is None or waiting.peer != peer:
            return
        del self._waiting[ident]
        if waiting.timer is not None:
            waiting.timer.cancel()
        waiting.on_reply(args.get("result"), waiting.expired)

    def requested(self, peer: int, args: dict[str, Any]) -> None:
        """A ``request`` record from ``peer``: the module's answer goes back to it."""
        ident = args.get("id")
        call = args.get("args")
        try:
            result = self.node.hooks.fold_maybe_async(
                "cluster-request", None, peer, str(args.get("module")), str(args.get("name")),
                call if isinstance(call, dict) else {})
        except Exception:  # a bug in the handler: the asker gets no answer, the link goes on
            log.exception("answering a request of %s %s", self.node.peer_label, peer)
            result = None
        if hasattr(result, "__await__"):
            asyncio.ensure_future(self._reply_after(peer, ident, result))
        else:
            self._reply(peer, ident, result)

    async def _reply_after(self, peer: int, ident: Any, pending: Any) -> None:
        try:
            result = await pending
        except Exception:
            log.exception("answering a request of %s %s", self.node.peer_label, peer)
            result = None
        self._reply(peer, ident, result)

    def _reply(self, peer: int, ident: Any, result: Any) -> None:
        link = self.node.links.get(peer)
        if link is not None:
            link.control("reply", {"id": ident, "result": result})

    def peer_gone(self, peer: int) -> None:
        """Questions to ``peer`` will not be answered."""
        for ident, waiting in list(self._waiting.items()):
            if waiting.peer == peer:
                del self._waiting[ident]
                if waiting.timer is not None:
                    waiting.timer.cancel()
                if not waiting.expired:
                    waiting.on_reply(None, False)


class _Waiting:
    __slots__ = ("peer", "on_reply", "timer", "expired")

    def __init__(self, peer: int, on_reply: OnReply) -> None:
        self.peer = peer
        self.on_reply = on_reply
        self.timer: asyncio.TimerHandle | None = None
        self.expired = False


class Forwarder:
    """The transport of a session handed over to ``peer``: what still reaches it here goes
    on to the peer's session of the same full JID (a forwarding tombstone)."""

    __slots__ = ("target", "link", "to", "timer")
    closed = False
    heard = None
    peer = None  # no connection here (the Transport's address)

    def __init__(self, target: int, link: Any, full: str) -> None:
        self.target = target
        self.link = link
        self.to = full.encode()
        self.timer: asyncio.TimerHandle | None = None

    #: ``send(element)``: ``self.link.stanza(self.to, element)``, as a remote session's
    send = frames.send_remote

    def flush(self) -> None:
        self.link.flush()

    def stream_error(self, condition: str, text: str | None = None) -> None:
        """A kick: for the session where it lives now."""
        self.link.control("kick", {"jid": self.to.decode(), "condition": condition,
                                   "text": text})

    def drop(self, reason: str) -> None:
        pass


class Holding:
    """The transport of a session just taken over from ``source``, until its drain
    marker is back: stanzas from ``source`` (forwarded, older) go through, the others wait
    (:attr:`held`) to be sent after them."""

    __slots__ = ("inner", "source", "node", "held", "timer")

    def __init__(self, inner: Any, source: int, node: Node) -> None:
        self.inner = inner
        self.source = source
        self.node = node
        self.held: list[Element] = []
        self.timer: asyncio.TimerHandle | None = None

    def send(self, element: Element) -> None:
        if self.node.receiving_from == self.source:
            self.inner.send(element)
        else:
            self.held.append(element)

    @property
    def closed(self) -> bool:
        return self.inner.closed

    @property
    def peer(self) -> Any:
        return self.inner.peer

    @property
    def heard(self) -> Any:
        return self.inner.heard

    @heard.setter
    def heard(self, value: bool) -> None:
        self.inner.heard = value

    def flush(self) -> None:
        self.inner.flush()

    def stream_error(self, condition: str, text: str | None = None) -> None:
        self.inner.stream_error(condition, text)

    def drop(self, reason: str) -> None:
        self.inner.drop(reason)


class HandOvers:
    """The sessions of this node handed over to a peer, waiting for its bind; and those
    taken over from one, waiting for its drain marker."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.sessions: dict[str, Session] = {}  # full JID -> the local session left behind
        self.holding: dict[str, Session] = {}  # full JID -> a session taken over here

    # -- the new holder -------------------------------------------------------------------

    def hold(self, session: Session, source: int) -> None:
        """``session`` was taken over from ``source``: hold newer stanzas until what
        ``source`` forwards is in (see the module docstring)."""
        link = self.node.links.get(source)
        if link is None:
            return
        full = session.jid.full
        holding = Holding(session.transport, source, self.node)
        holding.timer = asyncio.get_running_loop().call_later(DRAIN_S, self.drained, full)
        session.attach(holding)  # type: ignore[arg-type]
        self.holding[full] = session
        link.control("handover-flush", {"jid": full})

    def drained(self, full: Any) -> None:
        """The drain marker of ``full`` is back (or its time is up): release the session."""
        session = self.holding.pop(full, None) if isinstance(full, str) else None
        if session is None:
            return
        holding = session.transport
        if not isinstance(holding, Holding):
            return
        if holding.timer is not None:
            holding.timer.cancel()
        session.attach(holding.inner)
        for element in holding.held:
            holding.inner.send(element)

    # -- the old holder ----------------------------------------------------------------

    def drain(self, peer: int, full: Any) -> None:
        """``peer`` asks for the drain marker: everything it sent before was handled (and
        forwarded), so it goes back now, after that."""
        link = self.node.links.get(peer)
        if link is not None:
            link.control("handover-flushed", {"jid": full})

    def hand_over(self, session: Session, peer: int) -> int:
        """Forward what reaches ``session`` to ``peer`` from now on; its bind stamp (the
        peer's bind must be newer)."""
        node = self.node
        full = session.jid.full
        forwarder = Forwarder(peer, node.links[peer], full)
        session.attach(forwarder)  # type: ignore[arg-type]
        forwarder.timer = asyncio.get_running_loop().call_later(
            TOMBSTONE_S, self._never_bound, session)
        self.sessions[full] = session
        entry = node.registry.local.get(full)
        return entry.stamp if entry is not None else 0

    def take(self, session: Session) -> bool:
        """The peer's bind of ``session``'s full JID arrived: forget it here quietly."""
        full = session.jid.full
        if self.sessions.get(full) is not session:
            return False
        del self.sessions[full]
        self._cancel(session)
        node = self.node
        node.router.sessions.remove(session)
        if node.registry.unbind_local(session):
            node.forget_row(full)
        return True

    def peer_gone(self, peer: int) -> None:
        """Sessions handed to a peer that went before binding them end here; sessions
        taken over from it need not wait for its drain marker."""
        for full, session in list(self.holding.items()):
            if getattr(session.transport, "source", None) == peer:
                self.drained(full)
        for session in list(self.sessions.values()):
            if getattr(session.transport, "target", None) == peer:
                self._never_bound(session)

    def _never_bound(self, session: Session) -> None:
        full = session.jid.full
        if self.sessions.get(full) is not session:
            return
        del self.sessions[full]
        self._cancel(session)
        log.warning("session %s handed over to %s %s was never bound there: ended",
                    full, self.node.peer_label, getattr(session.transport, "target", "?"))
        session.end()
        self.node.end_local(session, "connection-timeout", "lost while moving to another node")

    @staticmethod
    def _cancel(session: Session) -> None:
        forwarder = session.transport
        timer = getattr(forwarder, "timer", None)
        if timer is not None:
            with contextlib.suppress(Exception):
                timer.cancel()
