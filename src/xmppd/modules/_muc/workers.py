"""MUC with several processes (``xmppd run --workers N``, or cluster nodes): one owns the
service's rooms.

The owner is :meth:`~xmppd.core.moduleapi.ModuleAPI.owner_worker` of the module's name: with
workers a stable hash (a dead owner worker is restarted by the supervisor), across cluster
nodes the oldest live node (a node that joins never takes the rooms; when the owner is
purged, the next oldest takes over).  Every stanza to a service domain is handed as it is
to the owner (:meth:`~xmppd.core.moduleapi.ModuleAPI.forward`), which handles it as with one
process and reaches occupants elsewhere through the session registry.  Rooms, their
listing, per-creator limits and archives are thus in one place, as before.

What every process keeps: which of its local sessions are in which room, learnt from the
self-presence (status 110) the owner sends them.  If the owner dies, its rooms are gone
with it: each such session gets unavailable presence from every room it was in, with
status 332 (removed because the service went down, XEP-0045 §9.7 and the status code
registry), so its client knows to join again.  The new owner (the restarted worker, or the
next oldest node) loads the persistent rooms from storage (without occupants; temporary
rooms are gone); stanzas sent to the service meanwhile wait for it (in the link to the
dead worker, or until the dead node is purged, then routed again) and are handled once it
is there.  When any other process dies, the owner removes its occupants from their rooms
(the others see them leave).  A cluster node that stops owning the rooms while it runs (it
was cut off from Redis, declared dead, and rejoined younger) forgets them and tells its
occupants the same, as do the other nodes when they purged its old life.

Every process (the owner too: it may stop being it) keeps :class:`Occupancy`: it sees the
self-presence of every occupant the rooms deliver through it, local or not, and tells the
local ones when their rooms' owner is gone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xmppd.jid import JID, JIDError
from xmppd.xml.element import Element

from .room import USER_NS

if TYPE_CHECKING:
    from xmppd.modules.muc import MUC


class Occupancy:
    """A non-owner worker's record of its sessions' rooms: full JID -> room -> nick."""

    def __init__(self, svc: MUC) -> None:
        self.svc = svc
        self.rooms: dict[str, dict[str, str]] = {}

    def inbound(self, stanza: Element, session: Any) -> bool:
        """``stanza/inbound``: a self-presence from a room to a local session."""
        if stanza.name != "presence":
            return False
        room, _, nick = stanza.attrs.get("from", "").partition("/")
        if not nick or room.partition("@")[2] not in self.svc.services:
            return False
        x = stanza.find("x", USER_NS)
        if x is None or not any(s.get("code") == "110" for s in x.findall("status", USER_NS)):
            return False
        if stanza.attrs.get("type") == "unavailable":
            joined = self.rooms.get(session.jid.full)
            if joined is not None:
                joined.pop(room, None)
                if not joined:
                    del self.rooms[session.jid.full]
        elif stanza.attrs.get("type") is None:
            self.rooms.setdefault(session.jid.full, {})[room] = nick
        return False

    def closed(self, session: Any) -> None:
        self.rooms.pop(session.jid.full, None)

    def owner_gone(self) -> None:
        """The owner (worker or node) died: every local occupant leaves with status 332."""
        rooms, self.rooms = self.rooms, {}
        sessions = self.svc.api.router.sessions
        for full, joined in rooms.items():
            try:
                session = sessions.get(JID(full))
            except JIDError:
                continue
            if session is None or session.remote:
                continue
            for room, nick in joined.items():
                self.svc.api.router.deliver(session, gone_presence(room, nick, full))


def gone_presence(room: str, nick: str, to: str | None = None) -> Element:
    """Unavailable self-presence from ``room``'s ``nick``: the service went down (332)."""
    attrs = {"from": f"{room}/{nick}", "type": "unavailable"}
    if to is not None:
        attrs["to"] = to
    pres = Element("presence", "jabber:client", attrs, [])
    x = pres.subelement("x", USER_NS)
    x.subelement("item", attrs={"affiliation": "none", "role": "none"})
    x.subelement("status", attrs={"code": "110"})
    x.subelement("status", attrs={"code": "332"})
    return pres

