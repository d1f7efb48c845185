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
and the broadcast goes on with a copy.  As on the one-to-one path, the chain is skipped for
a recipient whose account every handler declared quiet (no block list, an active client),
when no handler wants the broadcast's payload: that is checked once per broadcast.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from xmppd.jid import JID, JIDError
from xmppd.transport.stream import writes_plain
from xmppd.xml.element import Element, escape_attr
from xmppd.xml.stanza import CLIENT_NS


class Target:
    """One real full JID a room sends to, with its ``to`` prepared once."""

    __slots__ = ("full", "jid", "to_bytes")

    def __init__(self, full: str) -> None:
        self.full = full
        self.jid = JID(full)
        self.to_bytes = escape_attr(full).encode()


#: How many recipients' :class:`Target` a :class:`Deliverer` keeps (a JID parsed and escaped
#: once, not at every notification); past it the cache starts again.
TARGET_CACHE = 65536

_UNSET: Any = object()


class Broadcast:
    """A stanza (``to`` removed) and its serialization around the ``to`` attribute."""

    __slots__ = ("stanza", "head", "tail", "need")

    def __init__(self, stanza: Element) -> None:
        stanza.attrs.pop("to", None)
        data = stanza.to_bytes(CLIENT_NS)
        cut = len(stanza.name) + 1
        self.head = data[:cut] + b' to="'
        self.tail = b'"' + data[cut:]
        self.stanza = stanza
        #: the quiet bits that let a recipient skip ``stanza/inbound`` (Hooks.need), found
        #: at the first delivery: the payload, all that decides it, is the same for all
        self.need: int | None = _UNSET

    def bytes_for(self, target: Target) -> bytes:
        return self.head + target.to_bytes + self.tail


class Deliverer:
    """Sends broadcasts to real JIDs: local sessions directly, others through the router."""

    def __init__(self, router: Any) -> None:
        self.sessions = router.sessions
        self.hooks = router.hooks
        self.fire = router.hooks.fire_sync
        self.route = router.route_from_server
        self.delivered = router.delivered  # the router's counters (metrics)
        self._targets: dict[str, Target] = {}

    def target(self, full: str) -> Target:
        """The :class:`Target` of ``full`` (kept: a node's subscribers hear every publish);
        raises :class:`~xmppd.jid.JIDError` for an invalid JID."""
        target = self._targets.get(full)
        if target is None:
            target = Target(full)
            if len(self._targets) >= TARGET_CACHE:
                self._targets.clear()
            self._targets[full] = target
        return target

    def deliver_all(self, bc: Broadcast, recipients: Iterable[str]) -> None:
        """:meth:`deliver` to each JID of ``recipients``; an invalid one (stored before
        validation got stricter) is nobody to tell."""
        deliver, target = self.deliver, self.target
        for to in recipients:
            try:
                found = target(to)
            except JIDError:
                continue
            deliver(bc, found)

    def deliver(self, bc: Broadcast, target: Target) -> None:
        stanza = bc.stanza
        stanza.attrs["to"] = target.full
        session = self.sessions.get(target.jid)
        if session is None:
            self.route(stanza.copy())
            return
        self.delivered[stanza.name] += 1
        hooks = self.hooks
        need = bc.need
        if need is _UNSET:
            need = bc.need = hooks.need("stanza/inbound", stanza)
        if need is not None and hooks.quiet.get(session.bare, 0) & need == need:
            hooks.skipped["stanza/inbound"] += 1  # every handler would pass: none is called
        elif self.fire("stanza/inbound", stanza, session) is not False:
            bc.stanza = stanza.copy()  # a handler took (or dropped) it: never change that one
            return
        transport = session.transport
        if writes_plain(transport):
            transport.send_bytes(bc.head + target.to_bytes + bc.tail)
        else:
            transport.send(stanza.copy())

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
