"""Registering with a room (XEP-0045 §7.10), reserved nicks (§7.12, §10) and the nick
lookup node ``x-roomuser-item``.

A registration reserves one nick per real bare JID in the room and makes the user a
member (an admin or owner keeps the affiliation).  Who may register: anyone not banned
(``forbidden``) in a room that is not members-only; in a members-only room only those
already on the member list (or admins, owners) — the others get ``not-allowed`` (the
XEP's "registration restricted"; there is no standard roomconfig field to open it, and
no admin approval workflow here).  A nick reserved by (or in the room under) another
user is a ``conflict``; a missing or unusable nick ``not-acceptable``; anything but a
``muc#register`` form ``bad-request``.  ``<remove/>`` drops the reservation and leaves
the affiliation to the room's admins.  Reservations are kept with the room (persistent
rooms store them) and go when the user's affiliation drops to none or outcast; an admin
granting an affiliation with ``jid`` and ``nick`` reserves the nick too (§9.3), and the
member list shows reserved nicks (§9.5).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xmppd.modules._muc.admin import set_affiliation
from xmppd.modules._muc.forms import DATA_NS, form_values
from xmppd.modules._muc.room import AFF_RANK
from xmppd.xml.element import Element
from xmppd.xml.stanza import StanzaError, reply

if TYPE_CHECKING:
    from xmppd.modules._muc.room import Room

REGISTER_NS = "jabber:iq:register"
REGISTER_FORM = "http://jabber.org/protocol/muc#register"
ROOMNICK = "muc#register_roomnick"
ROOMUSER_NODE = "x-roomuser-item"


def _may_register(room: Room, bare: str) -> None:
    aff = room.affiliation(bare)
    if aff == "outcast":
        raise StanzaError("forbidden", "you are banned from this room")
    if room.config["members_only"] and AFF_RANK[aff] < 1:
        raise StanzaError("not-allowed", "only members may register with this room")


def register_form(nick: str) -> Element:
    form = Element("x", DATA_NS, {"type": "form"}, [])
    form.subelement("title", text="Room registration")
    form.subelement("instructions", text="Reserve a nickname in this room (and become a member)")
    f = form.subelement("field", attrs={"var": "FORM_TYPE", "type": "hidden"})
    f.subelement("value", text=REGISTER_FORM)
    f = form.subelement("field", attrs={"var": ROOMNICK, "type": "text-single",
                                        "label": "Nickname"})
    f.subelement("required")
    if nick:
        f.subelement("value", text=nick)
    return form


def register_get(room: Room, iq: Element, real: str, query: Element) -> Element:
    bare = real.split("/", 1)[0]
    _may_register(room, bare)
    nick = room.nicks.get(bare, "")
    out = reply(iq)
    q = out.subelement("query", REGISTER_NS)
    if nick:
        q.subelement("registered")
        q.subelement("username", text=nick)
    else:
        q.subelement("instructions", text="Fill in the form to reserve a nickname")
    q.append(register_form(nick))
    return out


def _nick(values: dict[str, list[str]], room: Room) -> str:
    given = values.get(ROOMNICK) or [""]
    if not (given[0] or "").strip():
        raise StanzaError("not-acceptable", f"{ROOMNICK} is required")
    return room.valid_nick(given[0])


def register_set(room: Room, iq: Element, real: str, query: Element) -> Element:
    bare = real.split("/", 1)[0]
    if query.find("remove", REGISTER_NS) is not None:
        if bare not in room.nicks:
            raise StanzaError("item-not-found", "you are not registered with this room")
        room.unreserve(bare)
        room.changed()
        return reply(iq)
    _may_register(room, bare)
    form = query.find("x", DATA_NS)
    if form is None or form.get("type") not in ("submit", "cancel"):
        raise StanzaError("bad-request", "submit the muc#register form")
    if form.get("type") == "cancel":
        return reply(iq)
    values = form_values(form)
    form_type = (values.get("FORM_TYPE") or [REGISTER_FORM])[0]
    if form_type != REGISTER_FORM:
        raise StanzaError("bad-request", f"not a {REGISTER_FORM} form")
    nick = _nick(values, room)
    room.check_free(nick, bare)
    room.reserve(bare, nick)
    if room.affiliation(bare) == "none":
        set_affiliation(room, bare, "member", None, None)
    room.changed()
    return reply(iq)


def roomuser_item(room: Room, iq: Element, real: str) -> Element:
    """§7.12: the user's reserved nick as the identity of node ``x-roomuser-item`` (an
    empty result without one)."""
    out = reply(iq)
    q = out.subelement("query", "http://jabber.org/protocol/disco#info",
                       {"node": ROOMUSER_NODE})
    nick = room.nicks.get(real.split("/", 1)[0])
    if nick:
        q.subelement("identity", attrs={"category": "conference", "type": "text", "name": nick})
    return out
