"""Broadcasts serialized once per stanza, not once per recipient (MUC rooms, PubSub and
PEP notifications).

A :class:`Broadcast` holds a stanza without ``to`` and its bytes split where ``to`` goes:
``head + to + tail``.  :meth:`Deliverer.deliver` writes those bytes straight into a local
client stream's output buffer when the session's stream sends with a ``send`` marked
:func:`~xmppd.transport.stream.plain_send`, in ``jabber:client`` (the common case); any other
transport (stream management's queue, a remote occupant, a future WebSocket) gets an
element of its own, so nothing that keeps stanzas ever sees the shared one change.

``stanza/inbound`` still runs per recipient (blocking drops, CSI flushes what it held), with
the shared element addressed to that recipient; a handler that takes the stanza keeps it,
and the broadcast goes on with a copy.
"""

from __future__ import annotations

from typing import Any

from xmppd.jid import JID
from xmppd.xml.element import Element, escape_attr
from xmppd.xml.stanza import CLIENT_NS


class Target:
    """One real full JID a room sends to, with its ``to`` prepared once."""

    __slots__ = ("full", "jid", "to_bytes")

    def __init__(self, full: str) -> None:
        self.full = full
        self.jid = JID(full)
        self.to_bytes = escape_attr(full).encode()


class Broadcast:
    """A stanza (``to`` removed) and its serialization around the ``to`` attribute."""

    __slots__ = ("stanza", "head", "tail")

    def __init__(self, stanza: Element) -> None:
        stanza.attrs.pop("to", None)
        data = stanza.to_bytes(CLIENT_NS)
        cut = len(stanza.name) + 1
        self.head = data[:cut] + b' to="'
        self.tail = b'"' + data[cut:]
        self.stanza = stanza

    def bytes_for(self, target: Target) -> bytes:
        return self.head + target.to_bytes + self.tail


class Deliverer:
    """Sends broadcasts to real JIDs: local sessions directly, others through the router."""

    def __init__(self, router: Any) -> None:
        self.sessions = router.sessions
        self.fire = router.hooks.fire_sync
        self.route = router.route_from_server
        self.delivered = router.delivered  # the router's counters (metrics)

    def deliver(self, bc: Broadcast, target: Target) -> None:
        stanza = bc.stanza
        stanza.attrs["to"] = target.full
        session = self.sessions.get(target.jid)
        if session is None:
            self.route(stanza.copy())
            return
        self.delivered[stanza.name] += 1
        if self.fire("stanza/inbound", stanza, session) is not False:
            bc.stanza = stanza.copy()  # a handler took (or dropped) it: never change that one
            return
        transport = session.transport
        send = transport.send
        if getattr(getattr(send, "__func__", None), "plain_send", False) \
                and transport.default_ns == CLIENT_NS:
            transport.send_bytes(bc.head + target.to_bytes + bc.tail)
        else:
            send(stanza.copy())

    def send(self, stanza: Element, target: Target) -> None:
        """One stanza to one JID (presence, errors...): no template."""
        stanza.attrs["to"] = target.full
        session = self.sessions.get(target.jid)
        if session is None:
            self.route(stanza)
            return
        self.delivered[stanza.name] += 1
        if self.fire("stanza/inbound", stanza, session) is False:
            session.send(stanza)
