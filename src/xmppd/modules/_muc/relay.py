"""IQs between occupants (XEP-0045 §7.x "IQ to an occupant") and voice requests (§7.13,
§8.6).

An IQ get/set from an occupant to ``room/nick`` goes to one real full JID joined under
that nick (the most recent), from the sender's occupant JID and under a new id; a
``vcard-temp`` request goes to the real *bare* JID instead (the vCard is the account's,
XEP-0054).  The result or error comes back to the sender's occupant JID under that id and
is passed to the original requester, from the target's occupant JID and with the
original id.  A pending relay is forgotten after :data:`TIMEOUT` seconds (the requester's
own client times it out too); non-occupants get ``not-acceptable``.

A visitor of a moderated room asks for voice with a ``muc#request`` form sent to the
room; every moderator gets the approval form, and one submitted with
``muc#request_allow`` true makes the visitor a participant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xmppd.modules._forms import single, submitted
from xmppd.modules._muc.forms import DATA_NS
from xmppd.modules._muc.room import Room
from xmppd.xml.element import Element
from xmppd.xml.stanza import CLIENT_NS, StanzaError

if TYPE_CHECKING:
    from xmppd.modules.muc import MUC

VCARD_NS = "vcard-temp"
REQUEST_FORM = "http://jabber.org/protocol/muc#request"
TIMEOUT = 120.0
MAX_PENDING = 10000  # relayed IQs awaiting an answer, over the whole service


class IqRelay:
    """The pending relayed IQs of the service: relay id -> where the answer goes."""

    def __init__(self, svc: MUC) -> None:
        self.svc = svc
        # relay id -> (room, requester's real JID, its id, target's nick, who may answer)
        self.pending: dict[str, tuple[str, str, str, str, str, str]] = {}

    def forward(self, room: Room, stanza: Element, real: str, nick: str,
                payload: Element) -> None:
        sender = room.by_real.get(real)
        if sender is None:
            raise StanzaError("not-acceptable", "only occupants may send IQs to occupants")
        target = room.occupants.get(nick)
        if target is None or not target.targets:
            raise StanzaError("item-not-found", f"no occupant {nick!r}")
        if len(self.pending) >= MAX_PENDING:
            raise StanzaError("resource-constraint", "too many IQs in flight")
        if payload.ns == VCARD_NS:
            to = target.bare
        else:
            to = next(reversed(target.targets))  # the most recently joined resource
        relay_id = self.svc.new_id()
        self.pending[relay_id] = (room.jid, real, stanza.attrs.get("id", ""), target.nick,
                                  sender.nick, to)
        self.svc.api.call_later(TIMEOUT, self.pending.pop, relay_id, None)
        out = Element("iq", CLIENT_NS, {**stanza.attrs, "from": room.nick_jid(sender.nick),
                                        "to": to, "id": relay_id}, list(stanza.children))
        self.svc.api.send(out)

    def answer(self, room: Room | None, stanza: Element, real: str, nick: str | None) -> bool:
        """A result or error to ``room/nick``: pass it on if it answers a relayed IQ."""
        entry = self.pending.get(stanza.attrs.get("id", ""))
        if entry is None:
            return False
        room_jid, requester, orig_id, target_nick, sender_nick, answerer = entry
        if room is None or room.jid != room_jid or nick != sender_nick or \
                real not in (answerer, answerer.split("/", 1)[0]):
            return False  # not from whom it was sent to: someone guessing ids
        del self.pending[stanza.attrs["id"]]
        out = Element("iq", CLIENT_NS, {**stanza.attrs, "from": room.nick_jid(target_nick),
                                        "to": requester, "id": orig_id}, list(stanza.children))
        self.svc.api.send(out)
        return True


# -- voice requests -----------------------------------------------------------------------

def request_form(x: Element) -> dict[str, list[str]] | None:
    """The fields of a submitted ``muc#request`` form, or None for another form."""
    if x.get("type", "submit") != "submit":
        return None
    fields = submitted(x)
    return fields if single(fields, "FORM_TYPE") == REQUEST_FORM else None


def voice_request(room: Room, real: str, fields: dict[str, list[str]]) -> None:
    """A visitor asks for voice (§7.13): each moderator gets the approval form (§8.6); a
    moderator's submitted approval grants it."""
    o = room.by_real.get(real)
    if o is None:
        raise StanzaError("not-acceptable", "only occupants may ask for voice")
    if "muc#request_allow" in fields:
        approve(room, o, fields)
        return
    if o.role != "visitor":
        return  # has voice already: nothing to ask for
    role = single(fields, "muc#role") or "participant"
    if role != "participant":
        raise StanzaError("not-allowed", "only voice (the participant role) may be requested")
    for viewer in room.occupants.values():
        if viewer.role != "moderator":
            continue
        msg = Element("message", CLIENT_NS, {"from": room.jid, "id": room.svc.new_id()}, [])
        x = msg.subelement("x", DATA_NS, {"type": "form"})
        x.subelement("title", DATA_NS, text="Voice request")
        x.subelement("instructions", DATA_NS,
                     text="To approve this request for voice, select the \"Grant voice to "
                     "this person?\" checkbox and click OK. To skip this request, click the "
                     "cancel button.")
        for var, ftype, label, value in (
                ("FORM_TYPE", "hidden", "", REQUEST_FORM),
                ("muc#role", "list-single", "Requested role", "participant"),
                ("muc#jid", "jid-single", "User ID", real),
                ("muc#roomnick", "text-single", "Room Nickname", o.nick),
                ("muc#request_allow", "boolean", "Grant voice to this person?", "false")):
            attrs = {"var": var, "type": ftype}
            if label:
                attrs["label"] = label
            x.subelement("field", DATA_NS, attrs).subelement("value", DATA_NS, text=value)
        room.send_to(msg, list(viewer.targets.values()))


def approve(room: Room, moderator: Any, fields: dict[str, list[str]]) -> None:
    if moderator.role != "moderator":
        raise StanzaError("forbidden", "only moderators approve voice requests")
    if single(fields, "muc#request_allow") not in ("1", "true"):
        return  # declined: nothing happens
    nick = single(fields, "muc#roomnick")
    target = room.occupants.get(nick or "")
    if target is None:
        raise StanzaError("item-not-found", f"no occupant {nick!r}")
    if target.role == "visitor":
        target.role = "participant"
        room.broadcast_presence(target, _actor=moderator.nick, _reason=None)
