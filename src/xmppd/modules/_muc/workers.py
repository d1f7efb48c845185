"""MUC with ``xmppd run --workers N``: one worker owns the service's rooms.

Every stanza to a service domain is handed as it is to the owner worker
(:meth:`~xmppd.core.moduleapi.ModuleAPI.forward`), which handles it as with one process and
reaches occupants on other workers through the session registry.  Rooms, their listing,
per-creator limits and archives are thus in one place, as before.

What the other workers keep: which of their local sessions are in which room, learnt from
the self-presence (status 110) the owner sends them.  If the owner worker dies, its
occupants' rooms are gone with it: each such session gets unavailable presence from every
room it was in, with status 332 (removed because the service went down, XEP-0045 §9.7 and
the status code registry), so its client knows to join again.  The restarted owner loads
the persistent rooms from storage (without occupants; temporary rooms are gone); stanzas
sent to the service meanwhile wait in the link to it and are handled once it is back.
And when any other worker dies, the owner removes that worker's occupants from their rooms
(the others see them leave).
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
        """The owner worker died: every local occupant leaves with status 332."""
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
                pres = Element("presence", "jabber:client",
                               {"from": f"{room}/{nick}", "to": full, "type": "unavailable"}, [])
                x = pres.subelement("x", USER_NS)
                x.subelement("item", attrs={"affiliation": "none", "role": "none"})
                x.subelement("status", attrs={"code": "110"})
                x.subelement("status", attrs={"code": "332"})
                self.svc.api.router.deliver(session, pres)
