"""A bound client session: what the router and the modules see of a client.

A :class:`Session` is not a connection.  It has a full JID, a :meth:`Session.send` that
hands a stanza to whatever carries the session now (its *transport*: a TCP stream today,
later a WebSocket, a BOSH session, a stream-management queue while detached, or a link to
another cluster node), and per-module state that each module reaches through its own
handle (:meth:`xmppd.core.moduleapi.ModuleAPI.state`).  The transport is replaceable
(:meth:`Session.attach`): stream management re-attaches a session to a new connection.

The router delivers with ``session.transport.send`` (no extra call on the routing hot
path); modules use :meth:`Session.send`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from xmppd.jid import JID
    from xmppd.xml.element import Element


class Transport(Protocol):
    """What a session needs of the connection that carries it."""

    closed: bool
    peer: tuple[str, int] | None
    #: Something was received since the flag was last cleared (None: no connection now,
    #: e.g. a detached stream-management session).  Keepalive pings silent peers.
    heard: bool | None

    def send(self, element: Element) -> None: ...
    def flush(self) -> None: ...
    def stream_error(self, condition: str, text: str | None = None) -> None: ...
    def drop(self, reason: str) -> None:
        """The peer is dead: cut the connection without a closing handshake."""


class Ended:
    """The transport of a session whose connection is gone for good (no stream management
    to resume it).  A straggler sent to it is dropped, as the closed stream would have.

    The stream hands its session over to this when it unbinds: the session no longer
    points back at the stream, so the pair is freed by reference counting when the
    connection goes instead of waiting as a cycle for the garbage collector (which, at
    thousands of logins per second, ran three times as often and cost ~25 µs a login).
    """

    __slots__ = ("peer",)
    closed = True
    heard = None

    def __init__(self, peer: tuple[str, int] | None) -> None:
        self.peer = peer

    def send(self, element: Element) -> None:
        pass

    def flush(self) -> None:
        pass

    def stream_error(self, condition: str, text: str | None = None) -> None:
        pass

    def drop(self, reason: str) -> None:
        pass


class Session:
    """One bound resource of a local account."""

    # An idle server holds one per client: slots, and module state in a list created on
    # first use (most sessions carry state of one or two modules at most).
    __slots__ = ("jid", "bare", "transport", "_states", "_pending")
    #: A session bound on another worker (:class:`xmppd.cluster.registry.RemoteSession`):
    #: what it shares (presence...) is mirrored into its state, but its connection, and
    #: all that acts on one (keepalive, stream management, CSI, offline delivery), is there.
    remote = False

    def __init__(self, jid: JID, transport: Transport) -> None:
        self.jid = jid
        self.bare = jid.bare  # kept: JID.bare builds a new object each time
        self._states: list[Any] | None = None
        self._pending: set[Awaitable[Any]] | None = None
        self.attach(transport)

    def attach(self, transport: Transport) -> None:
        """Carry the session over ``transport`` from now on."""
        self.transport = transport

    def end(self) -> None:
        """The connection that carried the session is gone and nothing will resume it."""
        self.transport = Ended(self.transport.peer)

    def send(self, element: Element) -> None:
        """Hand ``element`` to the transport that carries the session now.  (The router's
        hot path calls ``session.transport.send`` itself: a bound method kept on every
        session would cost 64 bytes per idle client.)"""
        self.transport.send(element)

    @property
    def closed(self) -> bool:
        """No stanza sent now can reach the client any more."""
        return self.transport.closed

    @property
    def peer(self) -> tuple[str, int] | None:
        return self.transport.peer

    def flush(self) -> None:
        """Write what is buffered for the client now, not at the end of the iteration."""
        self.transport.flush()

    def stream_error(self, condition: str, text: str | None = None) -> None:
        """End the client's stream with an RFC 6120 §4.9 stream error."""
        self.transport.stream_error(condition, text)

    # -- durability: writes done on the session's behalf ----------------------------------

    def track(self, write: asyncio.Future[Any]) -> None:
        """Remember a write made for a stanza this session sent (an archive append...), so
        that :meth:`settled` can wait for it.  Stream management acknowledges a stanza only
        once what it caused is durable, without making the stream wait for each write."""
        if write.done():
            return
        pending = self._pending
        if pending is None:
            pending = self._pending = set()
        elif write in pending:  # a write shared by several stanzas (a batch): once
            return
        pending.add(write)
        write.add_done_callback(self._write_done)

    def _write_done(self, write: asyncio.Future[Any]) -> None:
        pending = self._pending
        if pending is not None:
            pending.discard(write)
            if not pending:
                self._pending = None

    async def settled(self) -> None:
        """Wait until every tracked write has completed (failed writes included)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    # -- per-module state: slots handed out by the module manager ------------------------

    def get_state(self, slot: int) -> Any:
        """The state in ``slot``, or None."""
        states = self._states
        if states is None or slot >= len(states):
            return None
        return states[slot]

    def set_state(self, slot: int, value: Any) -> None:
        states = self._states
        if states is None:
            states = self._states = [None] * (slot + 1)
        elif slot >= len(states):
            # a new list of the exact size: extend() would over-allocate room that an idle
            # session never fills (up to 64 bytes)
            states = self._states = states + [None] * (slot + 1 - len(states))
        states[slot] = value

    def __repr__(self) -> str:
        return f"<Session {self.jid}>"
