"""The moderator, admin and owner IQs of a room (XEP-0045 §8-§10) and moderated message
retraction (XEP-0425)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from xmppd.jid import JID, JIDError
from xmppd.modules._muc.forms import DATA_NS, apply_config, config_form
from xmppd.modules._muc.room import (
    ADMIN_NS,
    AFF_RANK,
    AFFILIATIONS,
    OCCUPANT_ID_NS,
    OWNER_NS,
    ROLES,
    USER_NS,
    Room,
    x_user,
)
from xmppd.xml.element import Element
from xmppd.xml.stanza import CLIENT_NS, StanzaError, reply

if TYPE_CHECKING:
    from xmppd.modules._muc.room import Occupant

MODERATE_NS = "urn:xmpp:message-moderate:1"
RETRACT_NS = "urn:xmpp:message-retract:1"


def _bare(text: str | None) -> str:
    try:
        return str(JID(text or "").bare)
    except JIDError:
        raise StanzaError("jid-malformed", f"{text!r} is not a JID") from None


def _actor(room: Room, real: str) -> tuple[Occupant | None, str]:
    """The occupant sending (if joined) and its affiliation."""
    bare = real.split("/", 1)[0]
    return room.by_real.get(real), room.affiliation(bare)


# -- muc#admin -----------------------------------------------------------------------------

def admin_get(room: Room, iq: Element, real: str, query: Element) -> Element:
    occupant, aff = _actor(room, real)
    item = query.find("item", ADMIN_NS)
    if item is None:
        raise StanzaError("bad-request", "ask for an affiliation or a role")
    out = reply(iq)
    result = out.subelement("query", ADMIN_NS)
    if item.get("affiliation"):
        wanted = item.get("affiliation")
        if wanted not in AFFILIATIONS or wanted == "none":
            raise StanzaError("bad-request", f"no list of affiliation {wanted!r}")
        if AFF_RANK[aff] < 2:
            raise StanzaError("forbidden", "only admins and owners see affiliation lists")
        for jid, a in sorted(room.affiliations.items()):
            if a == wanted:
                attrs = {"affiliation": a, "jid": jid}
                if jid in room.nicks:
                    attrs["nick"] = room.nicks[jid]  # the reserved nick (§9.5)
                result.subelement("item", attrs=attrs)
        return out
    wanted = item.get("role")
    if wanted not in ("moderator", "participant", "visitor"):
        raise StanzaError("bad-request", f"no list of role {wanted!r}")
    if occupant is None or occupant.role != "moderator":
        raise StanzaError("forbidden", "only moderators see role lists")
    for o in room.occupants.values():
        if o.role == wanted:
            result.subelement("item", attrs={"nick": o.nick, "role": o.role, "jid": o.bare,
                                             "affiliation": room.affiliation(o.bare)})
    return out


def admin_set(room: Room, iq: Element, real: str, query: Element) -> Element:
    occupant, aff = _actor(room, real)
    items = query.findall("item", ADMIN_NS)
    if not items:
        raise StanzaError("bad-request", "no items")
    actor_nick = occupant.nick if occupant is not None else None
    changes = []
    for item in items:  # check them all before changing anything
        reason = item.findtext("reason", ADMIN_NS)
        if item.get("role") is not None:
            changes.append(("role", _check_role(room, occupant, aff, item), item.get("role"),
                            reason))
        elif item.get("affiliation") is not None:
            who = _check_affiliation(room, aff, item)
            nick = None  # §9.3: a nick with the jid reserves it for a member, admin, owner
            if item.get("jid") and item.get("nick") and \
                    item.get("affiliation") in ("member", "admin", "owner"):
                nick = room.valid_nick(item.get("nick"))
                room.check_free(nick, who)
            changes.append(("aff", (who, nick), item.get("affiliation"), reason))
        else:
            raise StanzaError("bad-request", "an item needs a role or an affiliation")
    for kind, who, value, reason in changes:
        if kind == "role":
            set_role(room, who, value, actor_nick, reason)
        else:
            bare, nick = who
            set_affiliation(room, bare, value, actor_nick, reason)
            if nick is not None:
                room.reserve(bare, nick)
    room.changed()
    return reply(iq)


def _check_role(room: Room, occupant: Occupant | None, aff: str, item: Element) -> Occupant:
    role = item.get("role")
    if role not in ROLES:
        raise StanzaError("bad-request", f"no role {role!r}")
    if occupant is None or occupant.role != "moderator":
        raise StanzaError("forbidden", "only moderators change roles")
    target = room.occupants.get(item.get("nick") or "")
    if target is None:
        raise StanzaError("item-not-found", f"no occupant {item.get('nick')!r}")
    target_aff = room.affiliation(target.bare)
    if role in ("none", "visitor") and AFF_RANK[target_aff] >= 2 and \
            AFF_RANK[aff] <= AFF_RANK[target_aff]:
        raise StanzaError("not-allowed", f"an {target_aff} cannot be kicked or muted")
    if (role == "moderator" or target.role == "moderator") and AFF_RANK[aff] < 2:
        raise StanzaError("not-allowed", "only admins and owners grant or revoke moderation")
    return target


def _check_affiliation(room: Room, aff: str, item: Element) -> str:
    new = item.get("affiliation")
    if new not in AFFILIATIONS:
        raise StanzaError("bad-request", f"no affiliation {new!r}")
    who = _bare(item.get("jid")) if item.get("jid") else None
    if who is None:
        target = room.occupants.get(item.get("nick") or "")
        if target is None:
            raise StanzaError("bad-request", "an affiliation item needs a jid (or a nick)")
        who = target.bare
    current = room.affiliation(who)
    if AFF_RANK[aff] < 2:
        raise StanzaError("forbidden", "only admins and owners change affiliations")
    if aff != "owner" and (AFF_RANK[current] >= 2 or new in ("owner", "admin")):
        raise StanzaError("not-allowed", "only owners change admins and owners")
    if current == "owner" and new != "owner" and \
            sum(1 for a in room.affiliations.values() if a == "owner") <= 1:
        raise StanzaError("conflict", "a room needs at least one owner")
    return who


def set_role(room: Room, target: Occupant, role: str, actor: str | None,
             reason: str | None) -> None:
    if role == "none":
        room.remove(target, ("307",), actor, reason)
        return
    target.role = role
    room.broadcast_presence(target, _actor=actor, _reason=reason)


def set_affiliation(room: Room, bare: str, new: str, actor: str | None,
                    reason: str | None) -> None:
    if new in ("none", "outcast"):
        room.unreserve(bare)  # a registration goes with the affiliation
    if new == "none":
        room.affiliations.pop(bare, None)
    else:
        room.affiliations[bare] = new
    for o in [o for o in room.occupants.values() if o.bare == bare]:
        if new == "outcast":
            room.remove(o, ("301",), actor, reason, affiliation="outcast")
        elif new == "none" and room.config["members_only"]:
            room.remove(o, ("321",), actor, reason, affiliation="none")
        else:
            o.role = room.default_role(room.affiliation(bare))
            room.broadcast_presence(o, _actor=actor, _reason=reason)


# -- muc#owner -----------------------------------------------------------------------------

def owner_get(room: Room, iq: Element, real: str, query: Element) -> Element:
    if _actor(room, real)[1] != "owner":
        raise StanzaError("forbidden", "only owners configure the room")
    out = reply(iq)
    svc = room.svc
    out.subelement("query", OWNER_NS).append(
        config_form(room.config, svc.max_users_limit, svc.max_history))
    return out


def owner_set(room: Room, iq: Element, real: str, query: Element) -> Element:
    if _actor(room, real)[1] != "owner":
        raise StanzaError("forbidden", "only owners configure or destroy the room")
    destroy = query.find("destroy", OWNER_NS)
    if destroy is not None:
        room.svc.destroy(room, destroy.get("jid"), destroy.findtext("reason", OWNER_NS),
                         destroy.findtext("password", OWNER_NS))
        return reply(iq)
    form = query.find("x", DATA_NS)
    if form is None:
        raise StanzaError("bad-request", "submit or cancel the configuration form")
    if form.get("type") == "cancel":
        if room.locked:
            room.svc.destroy(room, None, None, None)
        return reply(iq)
    if form.get("type") != "submit":
        raise StanzaError("bad-request", "a form of type 'submit' or 'cancel'")
    svc = room.svc
    old = room.config
    new = apply_config(old, form, svc.max_users_limit, svc.max_history)
    room.config = new
    if room.history.maxlen != new["history_length"]:
        room.history = type(room.history)(room.history, maxlen=new["history_length"])
    was_locked, room.locked = room.locked, False
    for o in room.occupants.values():  # moderation switched on or off
        if o.role in ("participant", "visitor"):
            role = room.default_role(room.affiliation(o.bare))
            if role != o.role:
                o.role = role
                room.broadcast_presence(o)
    if new["persistent"]:
        room.changed()
    elif old["persistent"]:
        svc.unsave(room)
    if not was_locked:
        codes = ["104"]
        if new["whois"] != old["whois"]:
            codes.append("172" if new["whois"] == "anyone" else "173")
        if new["logging"] != old["logging"]:
            codes.append("170" if new["logging"] else "171")
        room.status_message(tuple(codes))
    if new["members_only"] and not old["members_only"]:
        for o in list(room.occupants.values()):
            if AFF_RANK[room.affiliation(o.bare)] < 1:
                room.remove(o, ("322",), None, None)
    return reply(iq)


# -- XEP-0425 moderation ---------------------------------------------------------------------

async def moderate(room: Room, iq: Element, real: str, query: Element) -> Element:
    occupant, _aff = _actor(room, real)
    if occupant is None or occupant.role != "moderator":
        raise StanzaError("forbidden", "only moderators retract messages")
    if query.find("retract", RETRACT_NS) is None:
        raise StanzaError("bad-request", "only retraction is supported")
    sid = query.get("id")
    if not sid or not await room.svc.history.knows(room, sid):
        raise StanzaError("item-not-found", "no such message in this room")
    reason = query.findtext("reason", MODERATE_NS)
    by = room.nick_jid(occupant.nick)
    actor_id = room.occupant_id(occupant.bare)
    room.retracted[sid] = {"by": by, "occupant_id": actor_id, "reason": reason or ""}
    room.svc.history.retract(room, sid)
    room.changed()
    msg = Element("message", CLIENT_NS, {"from": room.jid, "type": "groupchat",
                                         "id": room.svc.new_id()}, [])
    retract = msg.subelement("retract", RETRACT_NS, {"id": sid})
    moderated = retract.subelement("moderated", MODERATE_NS, {"by": by})
    moderated.subelement("occupant-id", OCCUPANT_ID_NS, {"id": actor_id})
    if reason:
        retract.subelement("reason", RETRACT_NS, text=reason)
    room.send_each(lambda viewer: (0, lambda: msg.copy()))
    return reply(iq)


def tombstone(room: Room, original: Element, sid: str) -> Element:
    """What the archive shows in place of a retracted message."""
    info = room.retracted[sid]
    out = Element("message", CLIENT_NS, {k: v for k, v in original.attrs.items()
                                          if k in ("from", "type", "id")}, [])
    retracted = out.subelement("retracted", RETRACT_NS)
    moderated = retracted.subelement("moderated", MODERATE_NS, {"by": info["by"]})
    moderated.subelement("occupant-id", OCCUPANT_ID_NS, {"id": info["occupant_id"]})
    if info.get("reason"):
        retracted.subelement("reason", RETRACT_NS, text=info["reason"])
    return out


__all__ = ["USER_NS", "admin_get", "admin_set", "moderate", "owner_get", "owner_set",
           "tombstone", "x_user"]
