"""One room: its configuration, affiliations, occupants, presence and messages (XEP-0045
§7 and §8); the moderator, admin and owner IQs are in :mod:`.admin`, history and the room
archive in :mod:`.archive`.

An *occupant* is one nick; the real full JIDs joined under it are its *targets* (more than
one when a user joins with several resources under one nick: they all get the room's
traffic, the others see one occupant; a nick change moves them all).  A registered user's
nick is reserved (:mod:`.register`): nobody else may join or change to it.  A new room
stays *locked* until its owner submits the configuration form or accepts the instant room:
anyone else gets ``item-not-found``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from xmppd.jid import JID, JIDError
from xmppd.modules._fanout import Broadcast, Target
from xmppd.xml.element import Element
from xmppd.xml.stanza import CLIENT_NS, StanzaError

if TYPE_CHECKING:
    from xmppd.modules.muc import MUC

MUC_NS = "http://jabber.org/protocol/muc"
USER_NS = MUC_NS + "#user"
ADMIN_NS = MUC_NS + "#admin"
OWNER_NS = MUC_NS + "#owner"
DELAY_NS = "urn:xmpp:delay"
SID_NS = "urn:xmpp:sid:0"
OCCUPANT_ID_NS = "urn:xmpp:occupant-id:0"

AFFILIATIONS = ("owner", "admin", "member", "none", "outcast")
AFF_RANK = {"outcast": -1, "none": 0, "member": 1, "admin": 2, "owner": 3}
ROLES = ("moderator", "participant", "visitor", "none")


class Occupant:
    """One nick in a room and the real full JIDs joined under it."""

    __slots__ = ("nick", "bare", "role", "targets", "payload", "tokens", "tokens_at")

    def __init__(self, nick: str, bare: str, role: str, burst: float) -> None:
        self.nick = nick
        self.bare = bare
        self.role = role
        self.targets: dict[str, Target] = {}
        self.payload: list[Element] = []  # <show/>, <status/>, caps... of the last presence
        self.tokens = burst
        self.tokens_at = time.monotonic()

    def take_token(self, rate: float, burst: float) -> bool:
        """The message token bucket: False when the occupant sends too fast."""
        if rate <= 0:
            return True
        now = time.monotonic()
        self.tokens = min(burst, self.tokens + (now - self.tokens_at) * rate)
        self.tokens_at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def x_user(codes: tuple[str, ...] = (), **item: str) -> Element:
    """``<x xmlns='…muc#user'>`` with an ``<item/>`` of the given attributes and codes."""
    x = Element("x", USER_NS, {}, [])
    if item:
        x.subelement("item", attrs={k: v for k, v in item.items() if v is not None})
    for code in codes:
        x.subelement("status", attrs={"code": code})
    return x


def _presence_payload(stanza: Element) -> list[Element]:
    return [k for k in stanza.elements()
            if k.ns not in (MUC_NS, USER_NS, OCCUPANT_ID_NS) and k.name != "error"]


class Room:
    """A room of the service ``svc`` (the module instance)."""

    def __init__(self, svc: MUC, jid: str, config: dict[str, Any], creator: str = "",
                 locked: bool = False) -> None:
        self.svc = svc
        self.jid = jid
        self.config = config
        self.creator = creator
        self.locked = locked
        #: the room's write to storage in flight, if any (MUC.save)
        self.saving: asyncio.Future | None = None
        self.affiliations: dict[str, str] = {}
        self.occupants: dict[str, Occupant] = {}
        self.by_real: dict[str, Occupant] = {}
        self.subject = ""
        self.subject_from = ""
        self.secret = secrets.token_hex(16)
        self.history: deque[tuple[float, bytes, str]] = deque(maxlen=config["history_length"])
        self.retracted: dict[str, dict[str, str]] = {}
        self.nicks: dict[str, str] = {}  # reserved nicks (§7.10): real bare JID -> nick
        self.nick_owners: dict[str, str] = {}  # and back

    # -- persistence ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "affiliations": self.affiliations, "creator": self.creator,
                "subject": self.subject, "subject_from": self.subject_from,
                "secret": self.secret, "retracted": self.retracted, "nicks": self.nicks}

    @classmethod
    def from_dict(cls, svc: MUC, jid: str, data: dict[str, Any]) -> Room:
        config = svc.new_config()
        config.update(data.get("config", {}))
        room = cls(svc, jid, config, data.get("creator", ""))
        room.affiliations = data.get("affiliations", {})
        room.subject = data.get("subject", "")
        room.subject_from = data.get("subject_from", "")
        room.secret = data.get("secret", room.secret)
        room.retracted = data.get("retracted", {})
        for bare, nick in data.get("nicks", {}).items():
            room.reserve(bare, nick)
        return room

    def changed(self) -> None:
        """Store the room if it is persistent (config, affiliations, subject...)."""
        if self.config["persistent"] and not self.locked:
            self.svc.save(self)

    # -- who is who -----------------------------------------------------------------------

    def reserve(self, bare: str, nick: str) -> None:
        """``nick`` is ``bare``'s registered nick (replacing an earlier one)."""
        self.unreserve(bare)
        self.nicks[bare] = nick
        self.nick_owners[nick] = bare

    def unreserve(self, bare: str) -> None:
        nick = self.nicks.pop(bare, None)
        if nick is not None:
            self.nick_owners.pop(nick, None)

    def valid_nick(self, text: str) -> str:
        """A nick to reserve, as a join would see it (``not-acceptable`` if unusable)."""
        text = text.strip()
        try:
            nick = JID(f"{self.jid}/{text}").resource if text else None
        except JIDError:
            nick = None
        if not nick or nick != nick.strip():
            raise StanzaError("not-acceptable", f"{text!r} is not a usable nickname")
        return nick

    def check_reserved(self, nick: str, bare: str) -> None:
        holder = self.nick_owners.get(nick)
        if holder is not None and holder != bare:
            raise StanzaError("conflict", "that nickname is reserved by another user")

    def check_free(self, nick: str, bare: str) -> None:
        """``bare`` may reserve ``nick``: nobody else has it, reserved or in the room."""
        self.check_reserved(nick, bare)
        o = self.occupants.get(nick)
        if o is not None and o.bare != bare:
            raise StanzaError("conflict", "another occupant uses that nickname")

    def affiliation(self, bare: str) -> str:
        if bare in self.svc.admins:
            return "owner"
        return self.affiliations.get(bare, "none")

    def default_role(self, affiliation: str) -> str:
        if affiliation in ("owner", "admin"):
            return "moderator"
        if affiliation == "member" or not self.config["moderated"]:
            return "participant"
        return "visitor"

    def occupant_id(self, bare: str) -> str:
        """XEP-0421: stable per room and real bare JID, unlinkable across rooms."""
        return hmac.new(self.secret.encode(), bare.encode(), hashlib.sha256).hexdigest()[:32]

    def nick_jid(self, nick: str) -> str:
        return f"{self.jid}/{nick}"

    def shows_jids_to(self, viewer: Occupant) -> bool:
        return self.config["whois"] == "anyone" or viewer.role == "moderator"

    # -- sending ------------------------------------------------------------------------------

    def send_each(self, build, skip: Occupant | None = None) -> None:
        """``build(viewer) -> Element`` once per distinct result key; sent to every target."""
        deliver = self.svc.deliverer.deliver
        cache: dict[Any, Broadcast] = {}
        for viewer in list(self.occupants.values()):
            if viewer is skip:
                continue
            key, make = build(viewer)
            bc = cache.get(key)
            if bc is None:
                bc = cache[key] = Broadcast(make())
            for target in viewer.targets.values():
                deliver(bc, target)

    def send_to(self, stanza: Element, targets) -> None:
        bc = Broadcast(stanza)
        for target in targets:
            self.svc.deliverer.deliver(bc, target)

    def presence_of(self, o: Occupant, show_jid: bool, codes: tuple[str, ...] = (),
                    type: str | None = None, payload: list[Element] | None = None,
                    **item: str | None) -> Element:
        attrs = {"from": self.nick_jid(o.nick)}
        if type:
            attrs["type"] = type
        pres = Element("presence", CLIENT_NS, attrs,
                       list(o.payload if payload is None else payload))
        fields = {"affiliation": self.affiliation(o.bare), "role": o.role}
        if show_jid and len(o.targets) == 1:
            fields["jid"] = next(iter(o.targets))
        elif show_jid:
            fields["jid"] = o.bare
        fields.update(item)
        x = x_user(codes, **fields)
        actor, reason = item.pop("_actor", None), item.pop("_reason", None)
        if actor or reason:
            it = x.find("item", USER_NS)
            it.attrs.pop("_actor", None)
            it.attrs.pop("_reason", None)
            if actor:
                it.subelement("actor", attrs={"nick": actor})
            if reason:
                it.subelement("reason", text=reason)
        pres.append(x)
        pres.append(Element("occupant-id", OCCUPANT_ID_NS, {"id": self.occupant_id(o.bare)}))
        return pres

    def broadcast_presence(self, o: Occupant, codes: tuple[str, ...] = (),
                           self_codes: tuple[str, ...] = (), type: str | None = None,
                           skip_self: bool = False, **item: str | None) -> None:
        """``o``'s presence to every occupant (``o`` itself with 110 and ``self_codes``)."""

        def build(viewer: Occupant):
            show = self.shows_jids_to(viewer)
            mine = viewer is o
            c = (*codes, *self_codes, "110") if mine else codes
            return (show, mine), lambda: self.presence_of(o, show, c, type, **item)

        self.send_each(build, skip=o if skip_self else None)

    # -- presence: join, update, nick change, leave ------------------------------------------

    def join(self, stanza: Element, real: str, bare: str, nick: str, created: bool,
             nick_changed: bool = False) -> None:
        config = self.config
        aff = self.affiliation(bare)
        if self.locked and aff != "owner":
            raise StanzaError("item-not-found", "this room is locked until its owner configures it")
        if aff == "outcast":
            raise StanzaError("forbidden", "you are banned from this room")
        if config["members_only"] and AFF_RANK[aff] < 1:
            raise StanzaError("registration-required", "this room is for members only")
        x = stanza.find("x", MUC_NS)
        if config["password_protected"] and aff not in ("owner", "admin"):
            given = x.findtext("password", MUC_NS) if x is not None else None
            if given != config["password"]:
                raise StanzaError("not-authorized", "a password is required")
        occupant = self.occupants.get(nick)
        if occupant is not None and occupant.bare != bare:
            raise StanzaError("conflict", "that nickname is in use")
        self.check_reserved(nick, bare)
        if occupant is None and len(self.occupants) >= config["max_users"] and \
                AFF_RANK[aff] < 2:
            raise StanzaError("service-unavailable", "the room is full")
        for o in self.occupants.values():
            if o.bare == bare and o.nick != nick and self.svc.api.options["one_nick_per_user"]:
                raise StanzaError("conflict", "you are in this room under another nickname")
        target = Target(real)
        payload = _presence_payload(stanza)
        if occupant is not None:  # another resource of the same user: one occupant
            occupant.targets[real] = target
            occupant.payload = payload
            self.by_real[real] = occupant
            self._welcome(occupant, target, stanza, ())
            return
        o = Occupant(nick, bare, self.default_role(aff), self.svc.burst)
        o.targets[real] = target
        o.payload = payload
        # what is already there, then the newcomer to the others, then self-presence last
        for other in list(self.occupants.values()):
            self.send_to(self.presence_of(other, self.shows_jids_to(o)), [target])
        self.occupants[nick] = o
        self.by_real[real] = o
        self.broadcast_presence(o, skip_self=True)
        codes = []
        if config["whois"] == "anyone":
            codes.append("100")
        if config["logging"]:
            codes.append("170")
        if created:
            codes.append("201")
        if nick_changed:
            codes.append("210")
        self._welcome(o, target, stanza, tuple(codes))

    def _welcome(self, o: Occupant, target: Target, stanza: Element,
                 codes: tuple[str, ...]) -> None:
        self.send_to(self.presence_of(o, True, (*codes, "110")), [target])
        x = stanza.find("x", MUC_NS)
        self.svc.history.send(self, target, x.find("history", MUC_NS) if x is not None else None)
        subject = Element("message", CLIENT_NS,
                          {"from": self.nick_jid(self.subject_from) if self.subject_from
                           else self.jid, "type": "groupchat"}, [])
        subject.subelement("subject", text=self.subject)
        self.send_to(subject, [target])

    def presence(self, stanza: Element, real: str, bare: str, nick: str,
                 nick_changed: bool = False) -> None:
        """Presence from ``real`` to ``room/nick`` (the join is :meth:`join`)."""
        ptype = stanza.attrs.get("type")
        o = self.by_real.get(real)
        if ptype == "unavailable":
            if o is not None:
                self.leave(o, real, stanza)
            return
        if ptype == "error":
            if o is not None:
                self.failed(o, real)
            return
        if ptype is not None:
            return  # subscriptions and probes to a room mean nothing
        if o is None:
            self.join(stanza, real, bare, nick, False, nick_changed)
        elif o.nick == nick:
            o.payload = _presence_payload(stanza)
            self.broadcast_presence(o)
        else:
            self.change_nick(o, nick)

    def change_nick(self, o: Occupant, nick: str) -> None:
        """The occupant (with every resource joined under the nick) takes ``nick``."""
        if nick in self.occupants:
            raise StanzaError("conflict", "that nickname is in use")
        self.check_reserved(nick, o.bare)
        self.broadcast_presence(o, ("303",), type="unavailable", nick=nick, payload=[])
        del self.occupants[o.nick]
        o.nick = nick
        self.occupants[nick] = o
        self.broadcast_presence(o)

    def leave(self, o: Occupant, real: str, stanza: Element | None) -> None:
        payload = [k for k in _presence_payload(stanza) if k.name == "status"] if stanza else []
        target = o.targets.pop(real, None)
        self.by_real.pop(real, None)
        if o.targets:  # the user is still here with another resource
            if target is not None:
                self.send_to(self.presence_of(o, True, ("110",), "unavailable", payload), [target])
            return
        o.targets[real] = target  # so that the leaver gets its own unavailable presence
        o.role = "none"
        self.broadcast_presence(o, type="unavailable", payload=payload)
        self._drop(o)

    def failed(self, o: Occupant, real: str) -> None:
        """``real`` bounced the room's presence (its server is unreachable, the client is
        gone): it is removed, the others are told with 333 (a technical problem)."""
        self.by_real.pop(real, None)
        o.targets.pop(real, None)
        if o.targets:
            return  # still here with another resource
        o.role = "none"
        self.broadcast_presence(o, ("307", "333"), type="unavailable", payload=[])
        self._drop(o)

    def remove(self, o: Occupant, codes: tuple[str, ...], actor: str | None,
               reason: str | None, affiliation: str | None = None) -> None:
        """Kick, ban or strip membership: unavailable presence with ``codes`` to all."""
        o.role = "none"
        item: dict[str, str | None] = {"_actor": actor, "_reason": reason}
        if affiliation:
            item["affiliation"] = affiliation
        self.broadcast_presence(o, codes, type="unavailable", payload=[], **item)
        self._drop(o)

    def _drop(self, o: Occupant) -> None:
        for real in o.targets:
            self.by_real.pop(real, None)
        o.targets.clear()
        self.occupants.pop(o.nick, None)
        if not self.occupants and not self.config["persistent"]:
            self.svc.forget(self)

    # -- messages -------------------------------------------------------------------------

    def groupchat(self, stanza: Element, real: str) -> None:
        o = self.by_real.get(real)
        if o is None:
            raise StanzaError("not-acceptable", "only occupants may send to the room")
        if o.role == "visitor":
            raise StanzaError("forbidden", "visitors have no voice in this room")
        subject = stanza.find("subject", CLIENT_NS)
        if subject is not None and stanza.find("body", CLIENT_NS) is None:
            if not (self.config["change_subject"] or o.role == "moderator"):
                raise StanzaError("forbidden", "only moderators may change the subject")
            self.subject, self.subject_from = subject.text, o.nick
            self.changed()
        elif not o.take_token(self.svc.rate, self.svc.burst):
            raise StanzaError("resource-constraint", "you are sending messages too fast")
        sid = self.svc.new_id()
        attrs = {"from": self.nick_jid(o.nick), "type": "groupchat"}
        if "id" in stanza.attrs:
            attrs["id"] = stanza.attrs["id"]
        kids: list[Element | str] = [
            k for k in stanza.elements()
            if not (k.ns == SID_NS and k.get("by") == self.jid) and k.ns != OCCUPANT_ID_NS]
        msg = Element("message", CLIENT_NS, attrs, kids)
        msg.append(Element("stanza-id", SID_NS, {"by": self.jid, "id": sid}))
        msg.append(Element("occupant-id", OCCUPANT_ID_NS, {"id": self.occupant_id(o.bare)}))
        bc = Broadcast(msg)
        if subject is None or stanza.find("body", CLIENT_NS) is not None:
            self.svc.history.add(self, bc.head[:-5] + bc.tail[1:], sid, o.nick)
        deliver = self.svc.deliverer.deliver
        for occupant in list(self.occupants.values()):
            for target in occupant.targets.values():
                deliver(bc, target)

    def private(self, stanza: Element, real: str, nick: str) -> None:
        o = self.by_real.get(real)
        if o is None:
            raise StanzaError("not-acceptable", "only occupants may send private messages")
        if stanza.attrs.get("type") == "groupchat":
            raise StanzaError("bad-request", "groupchat messages go to the room's bare JID")
        to = self.occupants.get(nick)
        if to is None:
            raise StanzaError("item-not-found", f"no occupant {nick!r}")
        allow = self.config["allow_pm"]
        if allow == "none" or (allow == "participants" and o.role == "visitor") or \
                (allow == "moderators" and o.role != "moderator"):
            raise StanzaError("forbidden", "private messages are not allowed in this room")
        kids = [k for k in stanza.elements() if k.ns != OCCUPANT_ID_NS]
        out = Element("message", CLIENT_NS, {**stanza.attrs, "from": self.nick_jid(o.nick)}, kids)
        out.append(Element("x", USER_NS, {}, []))
        self.send_to(out, list(to.targets.values()))

    def invite(self, stanza: Element, real: str, x: Element) -> None:
        """Mediated invitations and declines (§7.8.2)."""
        o = self.by_real.get(real)
        sender_bare = real.split("/", 1)[0]
        for decline in x.findall("decline", USER_NS):
            to = decline.get("to")
            if not to:
                raise StanzaError("bad-request", "a decline needs 'to'")
            out = Element("message", CLIENT_NS, {"from": self.jid, "to": to}, [])
            dx = out.subelement("x", USER_NS).subelement("decline", attrs={"from": sender_bare})
            for reason in decline.findall("reason", USER_NS):
                dx.append(reason)
            self.svc.api.send(out)
        invites = x.findall("invite", USER_NS)
        if not invites:
            return
        if o is None:
            raise StanzaError("not-acceptable", "only occupants may invite")
        aff = self.affiliation(o.bare)
        if not self.config["allow_invites"] and AFF_RANK[aff] < 2 and o.role != "moderator":
            raise StanzaError("forbidden", "only moderators may invite to this room")
        for invite in invites:
            to = invite.get("to")
            if not to:
                raise StanzaError("bad-request", "an invite needs 'to'")
            out = Element("message", CLIENT_NS, {"from": self.jid, "to": to}, [])
            ix = out.subelement("x", USER_NS)
            inv = ix.subelement("invite", attrs={"from": o.bare})
            reason = invite.findtext("reason", USER_NS)
            if reason:
                inv.subelement("reason", text=reason)
            if self.config["password_protected"]:
                ix.subelement("password", text=self.config["password"])
            out.subelement("body", CLIENT_NS,
                           text=f"{o.bare} invites you to {self.jid}" + (f": {reason}" if reason else ""))
            if self.config["members_only"] and AFF_RANK[aff] >= 2:
                invitee = to.split("/", 1)[0]
                if self.affiliation(invitee) == "none":
                    self.affiliations[invitee] = "member"
                    self.changed()
            self.svc.api.send(out)

    def status_message(self, codes: tuple[str, ...]) -> None:
        """A message from the room with status codes (104 config changed...)."""
        msg = Element("message", CLIENT_NS, {"from": self.jid, "type": "groupchat"}, [])
        msg.append(x_user(codes))
        self.send_each(lambda viewer: (0, lambda: msg.copy()))
