"""XEP-0045 Multi-User Chat on ``conference.<domain>`` (the ``host`` option), with room
history and a room archive (MAM, XEP-0313), stanza-ids (XEP-0359), self-ping (XEP-0410),
occupant ids (XEP-0421) and moderated retraction (XEP-0425); IQs between occupants are
relayed and visitors may ask for voice (:mod:`xmppd.modules._muc.relay`); users register
with a room to reserve a nick (:mod:`xmppd.modules._muc.register`).

The service domains are not served domains, so the router fires ``route/remote`` for
them; this module takes those stanzas first (priority 20, before components and s2s) and
lists each service in disco#items of its domain.  Rooms live in memory; a persistent room
(config, affiliations, reserved nicks, subject, occupant-id secret, retractions) is one key
of the module's key-value store (owner = the room's bare JID) and its messages are in the
module's archive under their stanza-ids; everything is loaded at start.

Room broadcasts are serialized once per stanza and written into each local occupant's
stream with only ``to`` differing (:mod:`xmppd.modules._muc.fanout`).  Limits: rooms per
creator, occupants per room (``maxusers``), a token bucket per occupant for messages, and
who may create rooms at all (``restrict_room_creation``).  Groupchat messages are never
stored offline (the offline module stores only ``chat`` and ``normal``).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Mapping
from typing import Any

from xmppd.core.module import Module, Option
from xmppd.core.moduleapi import Interest, ModuleAPI
from xmppd.jid import JID, JIDError
from xmppd.modules._fanout import Deliverer
from xmppd.modules._muc import admin
from xmppd.modules._muc.archive import MAM_NS, History
from xmppd.modules._muc.forms import DATA_NS, default_config, info_form, room_features
from xmppd.modules._muc.register import (
    REGISTER_NS,
    ROOMUSER_NODE,
    register_get,
    register_set,
    roomuser_item,
)
from xmppd.modules._muc.relay import IqRelay, request_form, voice_request
from xmppd.modules._muc.room import (
    ADMIN_NS,
    MUC_NS,
    OCCUPANT_ID_NS,
    OWNER_NS,
    SID_NS,
    USER_NS,
    Room,
)
from xmppd.modules._muc.workers import Occupancy
from xmppd.storage.memory import MemoryStorage
from xmppd.storage.stores import new_item_id
from xmppd.xml.element import Element
from xmppd.xml.stanza import StanzaError, error_reply, iq_payload, reply

INFO_NS = "http://jabber.org/protocol/disco#info"
ITEMS_NS = "http://jabber.org/protocol/disco#items"
PING_NS = "urn:xmpp:ping"
SELF_PING_NS = "http://jabber.org/protocol/muc#self-ping-optimization"
SERVICE_FEATURES = (
    MUC_NS, "http://jabber.org/protocol/muc#unique", INFO_NS, ITEMS_NS, PING_NS,
    MAM_NS, SID_NS, OCCUPANT_ID_NS, admin.MODERATE_NS, "jabber:x:conference", SELF_PING_NS,
)
REQUEST_NS = "http://jabber.org/protocol/muc#request"
ROOM_FEATURES = (MUC_NS, "http://jabber.org/protocol/muc#stable_id", SID_NS, REQUEST_NS,
                 OCCUPANT_ID_NS, admin.MODERATE_NS, SELF_PING_NS, INFO_NS, ITEMS_NS, REGISTER_NS)


def _check_host(pattern: str) -> str | None:
    if "{domain}" not in pattern:
        return "must contain {domain} (e.g. \"conference.{domain}\")"
    return None


class MUC(Module):
    """Multi-User Chat rooms on one service domain per served domain."""

    name = "muc"
    xeps = ("XEP-0045", "XEP-0249", "XEP-0313", "XEP-0359", "XEP-0410", "XEP-0421", "XEP-0425")
    soft_depends = ("disco", "s2s")
    stateful = True  # rooms' occupants live in memory
    workers_safe = True  # one worker owns the rooms (:mod:`._muc.workers`)
    options = {
        "host": Option(str, "conference.{domain}", "the service's domain, per served domain",
                       check=_check_host),
        "name": Option(str, "Chatrooms", "the service's name in disco"),
        "restrict_room_creation": Option(str, "local", "who may create rooms",
                                         choices=("everyone", "local", "admins")),
        "admins": Option(list, (), "bare JIDs that own every room and may always create rooms",
                         item=str),
        "max_rooms_per_user": Option(int, 10, "rooms one user may have created (0: no limit)",
                                     min=0),
        "max_users": Option(int, 200, "a new room's maxusers", min=1),
        "max_users_limit": Option(int, 1000, "the largest maxusers an owner may set", min=1),
        "history_length": Option(int, 20, "a new room's historylength", min=0),
        "max_history": Option(int, 100, "the largest historylength an owner may set", min=0),
        "message_rate": Option(float, 5.0, "messages per second per occupant (0: no limit)",
                               min=0),
        "message_burst": Option(int, 20, "messages an occupant may send at once", min=1),
        "mam_page_size": Option(int, 20, "archive results per page unless asked", min=1),
        "mam_max_page_size": Option(int, 100, "the most archive results per page", min=1),
        "one_nick_per_user": Option(bool, False, "a user may not join one room under two nicks"),
    }

    # -- setup --------------------------------------------------------------------------------

    @classmethod
    def service_domains(cls, options: Mapping[str, Any], domain: str) -> tuple[str, ...]:
        return (options["host"].format(domain=domain),)

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        opts = api.options
        self.services: dict[str, str] = {}  # service domain -> the served domain
        self._unlist: dict[str, Any] = {}  # service domain -> its disco#items entry's undo
        self._take_options(opts)
        self.rooms: dict[str, Room] = {}
        self.store = api.open_store("keyvalue")
        self.archive = api.open_store("archive")
        self.temp_storage = MemoryStorage()
        self.temp_archive = self.temp_storage.open_store("muc", "archive")
        self.deliverer = Deliverer(api.router)
        self.history = History(self)
        self.relay = IqRelay(self)
        #: set while the rooms are read from storage (stanzas to the service wait)
        self.loading: asyncio.Future[None] | None = None
        #: the worker or cluster node that owns the rooms (None: a node not joined yet)
        self.owner: int | None = None
        self.owning = False  # whether this process holds the rooms
        #: this process's sessions' rooms, for when their owner dies (None: alone)
        self.occupancy: Occupancy | None = None
        if api.clustered:
            self.occupancy = Occupancy(self)
            # sees every stanza with a muc#user child (its own presence from a room): the
            # interest keeps the message fast path (Hooks.message_gate) open with workers
            api.hook("stanza/inbound", self.occupancy.inbound, priority=1000,
                     interest=Interest(payloads=(USER_NS,)))
            api.hook("worker-gone", self.worker_gone)
            api.hook("owners-changed", self.owners_changed)
            api.hook("server-started", lambda server: self.owners_changed())
        api.hook("route/remote", self.route, priority=20)
        api.hook("session-closed", self.session_closed)
        api.hook("hosts-changed", self.hosts_changed)
        api.provide("muc", self)
        self.hosts_changed(api.domains, ())
        api.on_unload(lambda: self.hosts_changed((), tuple(self.services.values())))
        self.owners_changed()  # (a cluster node decides once it has joined)

    def owners_changed(self) -> None:
        """Who owns the rooms now.  When the owner changed (it died, or this cluster node
        that owned them had to rejoin under a new epoch), this process's occupants hear
        that their rooms are gone (332); a process that becomes the owner loads the
        persistent rooms (stanzas wait meanwhile); one that stops being it forgets its."""
        old, was = self.owner, self.owning
        self.owner = self.api.owner_worker(self.name)
        mine = self.owner is not None and self.owner == self.api.peer
        if was and not mine:
            self.owning = False
            self.rooms.clear()  # (the new owner loads the persistent ones from storage)
        if (old is not None and self.owner != old and not (was and mine)
                and self.occupancy is not None):
            self.occupancy.owner_gone()
        if mine and not self.owning:
            self.owning = True
            self.loading = asyncio.get_running_loop().create_future()
            self.api.spawn(self.load_rooms())

    def _take_options(self, opts: Any) -> None:
        self.admins = frozenset(opts["admins"])
        self.max_users_limit = opts["max_users_limit"]
        self.max_history = opts["max_history"]
        self.rate = opts["message_rate"]
        self.burst = float(opts["message_burst"])

    def reconfigure(self, api: ModuleAPI, old: Any) -> bool:
        """New options apply at once (rates to occupants who join from now on); a new
        ``host`` or ``name`` needs a restart (the rooms live on the old service)."""
        if (old["host"], old["name"]) != (api.options["host"], api.options["name"]):
            return False
        self._take_options(api.options)
        return True

    def hosts_changed(self, added: Any, removed: Any) -> None:
        """Serve (or stop serving) ``conference.<domain>`` for served domains."""
        disco, s2s = self.api.service("disco"), self.api.service("s2s")
        pattern, name = self.api.options["host"], self.api.options["name"]
        for domain in added:
            host = pattern.format(domain=domain)
            self.services[host] = domain
            if disco is not None:
                self._unlist[host] = disco.add_item(host, name, domain)
            if s2s is not None:
                s2s.extra_domains.add(host)
        for domain in removed:
            for host in [h for h, d in self.services.items() if d == domain]:
                del self.services[host]
                undo = self._unlist.pop(host, None)
                if undo is not None:
                    undo()
                if s2s is not None:
                    s2s.extra_domains.discard(host)

    async def load_rooms(self) -> None:
        try:
            await self.temp_storage.open()
            for owner in await self.store.owners():
                data = await self.store.get(owner, "room")
                if isinstance(data, dict):
                    room = self.rooms[owner] = Room.from_dict(self, owner, data)
                    await self.history.load(room)
        finally:
            loading, self.loading = self.loading, None
            if loading is not None and not loading.done():
                loading.set_result(None)

    def new_config(self) -> dict[str, Any]:
        return default_config(self.api.options["max_users"], self.api.options["history_length"])

    @staticmethod
    def new_id() -> str:
        return new_item_id()

    # -- storage --------------------------------------------------------------------------------

    def save(self, room: Room) -> None:
        """Store ``room``; an owner or admin IQ that changed it is answered once this write
        is done (:meth:`iq`), so an acknowledged change survives a crash."""
        write = asyncio.ensure_future(self.store.set(room.jid, "room", room.to_dict()))
        room.saving = write
        write.add_done_callback(lambda done: self._saved(room, done))

    def _saved(self, room: Room, write: asyncio.Future) -> None:
        if room.saving is write:
            room.saving = None
        if not write.cancelled() and write.exception() is not None:
            self.api.log.error("storing room %s failed", room.jid, exc_info=write.exception())

    async def _when_saved(self, write: asyncio.Future, result: Element) -> Element:
        try:
            await asyncio.shield(write)
        except Exception:  # logged by _saved
            raise StanzaError("internal-server-error", "the room could not be stored") from None
        return result

    def unsave(self, room: Room) -> None:
        self.api.spawn(self.store.delete_owner(room.jid))
        self.api.spawn(self.archive.delete_owner(room.jid))

    def forget(self, room: Room) -> None:
        """The room is gone (destroyed, or temporary and empty)."""
        if self.rooms.get(room.jid) is room:
            del self.rooms[room.jid]
        self.api.spawn(self.temp_archive.delete_owner(room.jid))
        if room.config["persistent"]:
            self.unsave(room)

    def destroy(self, room: Room, alternate: str | None, reason: str | None,
                password: str | None) -> None:
        """Destroy the room (§10.9): every occupant gets unavailable presence with
        ``<destroy/>`` (and the alternate venue)."""
        for o in list(room.occupants.values()):
            pres = Element("presence", "jabber:client",
                           {"from": room.nick_jid(o.nick), "type": "unavailable"}, [])
            x = pres.subelement("x", USER_NS)
            x.subelement("item", attrs={"affiliation": "none", "role": "none"})
            d = x.subelement("destroy", attrs={"jid": alternate} if alternate else {})
            if reason:
                d.subelement("reason", text=reason)
            if password:
                d.subelement("password", text=password)
            room.send_to(pres, list(o.targets.values()))
        room.occupants.clear()
        room.by_real.clear()
        self.forget(room)

    # -- routing ------------------------------------------------------------------------------

    def route(self, stanza: Element, origin: Any) -> Any:
        try:
            to = JID(stanza.attrs.get("to", ""))
        except JIDError:
            return False
        if to.domain not in self.services:
            return False
        if not self.owning:  # another worker or node owns the rooms
            if self.owner is None or self.api.owner_worker(self.name) != self.owner:
                self.owners_changed()  # (not joined at load; or not told yet)
            if self.owner is None:  # (only before this cluster node has joined)
                self.api.bounce(stanza, "service-unavailable", "the service is starting")
                return True
            if not self.owning:
                self.api.forward(self.owner, stanza)
                return True
        if self.loading is not None:
            return self._after_loading(stanza, to)
        result = self.handle(stanza, to)
        return True if result is None else self._handled(result)

    @staticmethod
    async def _handled(pending: Any) -> bool:
        await pending
        return True

    async def _after_loading(self, stanza: Element, to: JID) -> bool:
        if self.loading is not None:
            await self.loading
        result = self.handle(stanza, to)
        if result is not None:
            await result
        return True

    def handle(self, stanza: Element, to: JID) -> Any:
        """One stanza to the service, a room or an occupant; may return an awaitable."""
        real = stanza.attrs.get("from")
        if not real:
            return None
        try:
            bare = str(JID(real).bare)
            if to.localpart is None:
                return self.service_stanza(stanza, to)
            room_jid = str(to.bare)
            room = self.rooms.get(room_jid)
            name = stanza.name
            if name == "presence":
                self.presence(room, room_jid, stanza, real, bare, to.resource)
            elif name == "message":
                self.message(room, stanza, real, to.resource)
            elif name == "iq":
                return self.iq(room, stanza, real, to)
        except StanzaError as exc:
            if stanza.name == "presence" and stanza.attrs.get("type") != "error":
                # with the <x/> of the join (§7.2.x), which clients match errors by
                out = error_reply(stanza, exc.condition, exc.type, exc.text)
                out.children.insert(0, Element("x", MUC_NS, {}, []))
                self.api.send(out)
            else:
                self.api.router.bounce(stanza, exc.condition, exc.text, exc.type)
        except JIDError:
            self.api.router.bounce(stanza, "jid-malformed")
        return None

    def session_closed(self, session: Any, abrupt: bool) -> None:
        """A client gone without unavailable presence leaves its rooms (the presence module
        usually said so already)."""
        full = str(session.jid)
        if self.occupancy is not None:
            self.occupancy.closed(session)
        for room in list(self.rooms.values()):
            o = room.by_real.get(full)
            if o is not None:
                room.leave(o, full, None)

    def worker_gone(self, worker: int, sessions: list[Any]) -> None:
        """Another worker or node ended: as owner, its occupants leave their rooms; if it
        was the owner, this process's occupants hear that their rooms are gone, and the
        owner is asked anew (a cluster's next oldest node takes over)."""
        if self.owning:
            for session in sessions:
                self.session_closed(session, True)
        elif worker == self.owner and self.occupancy is not None:
            self.occupancy.owner_gone()  # (a worker: the same one owns them once back)
        self.owners_changed()  # (a cluster node: the next oldest owns them)

    # -- presence and messages ---------------------------------------------------------------

    def presence(self, room: Room | None, room_jid: str, stanza: Element, real: str,
                 bare: str, nick: str | None) -> None:
        ptype = stanza.attrs.get("type")
        if nick is None or not nick.strip():
            if ptype is None:
                raise StanzaError("jid-malformed", "join with a nickname: room@service/nick")
            return
        clean = nick.strip()
        if room is None:
            if ptype is not None:
                return
            room = self.create(room_jid, bare, stanza)
            try:
                room.join(stanza, real, bare, clean, True, clean != nick)
            except StanzaError:
                self.forget(room)
                raise
            return
        room.presence(stanza, real, bare, clean, clean != nick)

    def create(self, room_jid: str, bare: str, stanza: Element) -> Room:
        opts = self.api.options
        if bare not in self.admins:
            restrict = opts["restrict_room_creation"]
            if restrict == "admins":
                raise StanzaError("not-allowed", "only service admins create rooms here")
            if restrict == "local" and JID(bare).domain not in self.api.hosts:
                raise StanzaError("not-allowed", "only local users create rooms here")
            limit = opts["max_rooms_per_user"]
            if limit and sum(1 for r in self.rooms.values() if r.creator == bare) >= limit:
                raise StanzaError("policy-violation",
                                  f"you have created {limit} rooms already (max_rooms_per_user)")
        # A client that does not speak MUC (no <x/>) gets an instant room (§10.1.1).
        reserved = stanza.find("x", MUC_NS) is not None
        room = Room(self, room_jid, self.new_config(), creator=bare, locked=reserved)
        room.affiliations[bare] = "owner"
        self.rooms[room_jid] = room
        return room

    def message(self, room: Room | None, stanza: Element, real: str, nick: str | None) -> None:
        mtype = stanza.attrs.get("type", "normal")
        if mtype == "error":
            return
        if room is None or (room.locked and real not in room.by_real):
            raise StanzaError("item-not-found", "no such room")
        if room.locked:
            raise StanzaError("not-allowed", "configure the room (or accept the instant room) first")
        if nick is not None:
            room.private(stanza, real, nick)
        elif mtype == "groupchat":
            room.groupchat(stanza, real)
        else:
            form = stanza.find("x", DATA_NS)
            fields = request_form(form) if form is not None else None
            if fields is not None:
                voice_request(room, real, fields)
                return
            x = stanza.find("x", USER_NS)
            if x is not None:
                room.invite(stanza, real, x)
            elif stanza.find("body") is not None:
                raise StanzaError("bad-request", "send type='groupchat' to talk in the room")

    # -- IQs ------------------------------------------------------------------------------------

    def iq(self, room: Room | None, stanza: Element, real: str, to: JID) -> Any:
        itype = stanza.attrs.get("type")
        if itype not in ("get", "set"):
            if to.resource is not None:
                self.relay.answer(room, stanza, real, to.resource)
            return None
        payload = iq_payload(stanza)
        if payload is None:
            raise StanzaError("bad-request", "an IQ needs exactly one payload")
        bare = real.split("/", 1)[0]
        if room is None or (room.locked and room.affiliation(bare) != "owner"):
            raise StanzaError("item-not-found", "no such room")
        key = (itype, payload.ns, payload.name)
        if to.resource is not None:
            o = room.by_real.get(real)
            if key == ("get", PING_NS, "ping") and o is not None and o.nick == to.resource:
                self.api.send(reply(stanza))  # XEP-0410 self-ping, answered by the room
                return None
            self.relay.forward(room, stanza, real, to.resource, payload)
            return None
        handler = self.room_iqs.get(key)
        if handler is None:
            raise StanzaError("service-unavailable")
        result = handler(self, room, stanza, real, payload)
        if not inspect.isawaitable(result) and room.saving is not None and itype == "set":
            result = self._when_saved(room.saving, result)  # acknowledged once stored
        if inspect.isawaitable(result):
            return self._finish_iq(result, stanza)
        self.api.send(result)
        return None

    async def _finish_iq(self, pending: Any, stanza: Element) -> None:
        try:
            self.api.send(await pending)
        except StanzaError as exc:
            self.api.router.bounce(stanza, exc.condition, exc.text, exc.type)

    def room_info(self, room: Room, iq: Element, real: str, query: Element) -> Element:
        if query.get("node") == ROOMUSER_NODE:
            return roomuser_item(room, iq, real)
        if query.get("node"):
            raise StanzaError("item-not-found")
        out = reply(iq)
        q = out.subelement("query", INFO_NS)
        q.subelement("identity", attrs={"category": "conference", "type": "text",
                                        "name": room.config["name"] or room.jid.split("@")[0]})
        features = set(ROOM_FEATURES) | set(room_features(room.config))
        if room.config["logging"]:
            features.add(MAM_NS)
        for var in sorted(features):
            q.subelement("feature", attrs={"var": var})
        q.append(info_form(room.config, room.subject, len(room.occupants)))
        return out

    def room_items(self, room: Room, iq: Element, real: str, query: Element) -> Element:
        out = reply(iq)
        q = out.subelement("query", ITEMS_NS)
        if real in room.by_real:  # occupants only: no presence leak to outsiders
            for nick in sorted(room.occupants):
                q.subelement("item", attrs={"jid": room.nick_jid(nick), "name": nick})
        return out

    def room_ping(self, room: Room, iq: Element, real: str, query: Element) -> Element:
        return reply(iq)

    def mam_form(self, room: Room, iq: Element, real: str, query: Element) -> Element:
        out = reply(iq)
        form = out.subelement("query", MAM_NS).subelement("x", "jabber:x:data",
                                                         {"type": "form"})
        for var in ("FORM_TYPE", "with", "start", "end"):
            field = form.subelement("field", attrs={"var": var, "type": "hidden" if var ==
                                                    "FORM_TYPE" else "text-single"})
            if var == "FORM_TYPE":
                field.subelement("value", text=MAM_NS)
        return out

    room_iqs = {
        ("get", INFO_NS, "query"): room_info,
        ("get", ITEMS_NS, "query"): room_items,
        ("get", PING_NS, "ping"): room_ping,
        ("get", OWNER_NS, "query"): lambda self, *a: admin.owner_get(*a),
        ("set", OWNER_NS, "query"): lambda self, *a: admin.owner_set(*a),
        ("get", ADMIN_NS, "query"): lambda self, *a: admin.admin_get(*a),
        ("set", ADMIN_NS, "query"): lambda self, *a: admin.admin_set(*a),
        ("get", MAM_NS, "query"): mam_form,
        ("set", MAM_NS, "query"): lambda self, *a: self.history.query(*a),
        ("set", admin.MODERATE_NS, "moderate"): lambda self, *a: admin.moderate(*a),
        ("get", REGISTER_NS, "query"): lambda self, *a: register_get(*a),
        ("set", REGISTER_NS, "query"): lambda self, *a: register_set(*a),
    }

    def service_stanza(self, stanza: Element, to: JID) -> None:
        if stanza.name != "iq":
            if stanza.name == "message" and stanza.attrs.get("type") != "error":
                raise StanzaError("service-unavailable")
            return None
        itype = stanza.attrs.get("type")
        if itype not in ("get", "set"):
            return None
        payload = iq_payload(stanza)
        if payload is None:
            raise StanzaError("bad-request")
        key = (itype, payload.ns, payload.name)
        out = reply(stanza)
        if key == ("get", INFO_NS, "query"):
            if payload.get("node"):
                raise StanzaError("item-not-found")
            q = out.subelement("query", INFO_NS)
            q.subelement("identity", attrs={"category": "conference", "type": "text",
                                            "name": self.api.options["name"]})
            for var in sorted(SERVICE_FEATURES):
                q.subelement("feature", attrs={"var": var})
        elif key == ("get", ITEMS_NS, "query"):
            q = out.subelement("query", ITEMS_NS)
            suffix = "@" + to.domain
            for jid, room in sorted(self.rooms.items()):
                if jid.endswith(suffix) and room.config["public"] and not room.locked:
                    q.subelement("item", attrs={"jid": jid, "name": room.config["name"] or
                                                jid.split("@")[0]})
        elif key != ("get", PING_NS, "ping"):
            raise StanzaError("service-unavailable")
        self.api.send(out)
        return None
