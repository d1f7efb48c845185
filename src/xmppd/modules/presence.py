"""RFC 6121 §3 and §4: presence subscriptions and presence.

Subscription stanzas go through the pure state machine of :mod:`xmppd.modules._subscription`: the
user's outbound ones on ``presence/outbound``, inbound ones on ``presence/bare`` (and
``presence/full``, handled as if sent to the bare JID).  The contact is an opaque JID:
stanzas for it go through the router, so a remote contact needs only the ``route/remote``
transport.  Each change is stored atomically (the state machine runs inside the storage
transaction) before anything is routed, then pushed to interested resources.

Presence: a session's first available presence (no 'to') is its *initial presence*: it is
sent to every contact with a 'from' subscription and to the user's available resources
(including itself), probes go to contacts with a 'to' subscription, pending subscription
requests are redelivered, and the module event ``presence/available`` fires (offline
messages hook it).  Unavailable presence, sent or implied by a disconnect (clean or
abrupt), goes to the same subscribers and to every JID the session sent directed presence
to.  A probe from a subscriber is answered with the last presence of each available
resource, or one unavailable presence; other probes are ignored (no presence leak).
"""

from __future__ import annotations

from typing import Any

from xmppd.core.module import Module
from xmppd.core.moduleapi import ModuleAPI
from xmppd.jid import JID, JIDError, jid_or_none
from xmppd.modules._rosterdata import RosterItem
from xmppd.modules._subscription import TYPES as SUBSCRIPTION_TYPES
from xmppd.modules._subscription import Outcome, State, inbound, outbound
from xmppd.xml.element import Element
from xmppd.xml.stanza import CLIENT_NS, decode_stanza, encode_stanza

from . import roster as rosters

PREAPPROVAL_NS = "urn:xmpp:features:pre-approval"
#: Module event: (session, initial: bool) -- a session sent available presence.
AVAILABLE_EVENT = "presence/available"
#: The directed-presence recipients of a session that has none (one shared empty set).
_NOBODY: frozenset[str] = frozenset()


def _priority(stanza: Element) -> int:
    text = stanza.findtext("priority", CLIENT_NS)
    try:
        value = int(text.strip()) if text else 0
    except ValueError:
        return 0
    return max(-128, min(127, value))


def _bare(text: str | None) -> JID | None:
    jid = jid_or_none(text)
    return None if jid is None else jid.bare

def _with_state(old: RosterItem | None, jid: str, state: State, **extra: Any) -> RosterItem:
    base = old if old is not None else RosterItem(jid, listed=False)
    return base.replace(
        subscription=state.subscription, ask=state.pending_out, approved=state.approved,
        request=(base.request or b"") if state.pending_in else None, **extra,
    )


def presence(type_: str | None, frm: str, to: str) -> Element:
    """A bare ``<presence/>`` of ``type_`` (None: available)."""
    attrs = {"from": frm, "to": to}
    if type_:
        attrs["type"] = type_
    return Element("presence", CLIENT_NS, attrs, [])


def addressed(stanza: Element, to: str, frm: str | None = None) -> Element:
    """A copy of ``stanza`` addressed to ``to`` (and from ``frm``)."""
    out = stanza.copy()
    if frm is not None:
        out.attrs["from"] = frm
    out.attrs["to"] = to
    return out


def unavailable_recipients(has_from: list[str], directed: set[JID] | None) -> list[str]:
    """Who gets a session's unavailable presence (RFC 6121 §4.5.2, §4.6.3): the contacts
    with a 'from' subscription, then each JID it sent directed presence to and that is not
    among them."""
    out = list(has_from)
    sent = set(has_from)
    for jid in directed or ():
        if str(jid) not in sent and str(jid.bare) not in sent:
            out.append(str(jid))
    return out


def _subscribers(items: tuple[RosterItem, ...]) -> tuple[list[str], list[str]]:
    """(contacts with 'from', contacts with 'to') among roster ``items``."""
    states = [(i.jid, rosters.state_of(i)) for i in items]
    return [j for j, s in states if s.has_from], [j for j, s in states if s.has_to]


class PresenceState:
    """A session's presence: its last available presence stanza (None while unavailable),
    its priority, and the JIDs it sent directed presence to (RFC 6121 §4.6)."""

    __slots__ = ("presence", "priority", "directed")

    def __init__(self) -> None:
        self.presence: Element | None = None
        self.priority = 0
        self.directed: set[JID] | None = None  # created by the first directed presence

    def sent_directed(self, target: JID, available: bool) -> None:
        """Remember directed available presence to ``target`` (an unavailable one is owed
        to it later), sent while the session itself is available; forget it otherwise."""
        if available and self.presence is not None:
            if self.directed is None:
                self.directed = set()
            self.directed.add(target)
        elif self.directed:
            self.directed.discard(target)


class PresenceService:
    """What other modules may ask about a session's presence (service ``presence``)."""

    def __init__(self, api: ModuleAPI) -> None:
        self._api = api

    def last(self, session: Any) -> Element | None:
        """The session's last available presence; None while it is unavailable."""
        st = self._api.peek_state(session)
        return None if st is None else st.presence

    def available(self, session: Any) -> bool:
        return self.last(session) is not None

    def priority(self, session: Any) -> int:
        st = self._api.peek_state(session)
        return 0 if st is None else st.priority

    def directed(self, session: Any) -> frozenset[JID]:
        """The JIDs the session sent available directed presence to."""
        st = self._api.peek_state(session)
        return frozenset(st.directed) if st is not None and st.directed else _NOBODY


class Presence(Module):
    """Subscriptions, initial/unavailable presence, probes and directed presence.
    Provides the service ``presence``; fires ``presence/available``."""

    name = "presence"
    workers_safe = True
    stateful = True  # each session's presence, directed presence
    xeps = ("RFC 6121 §3", "RFC 6121 §4")
    depends = ("roster",)

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        self.router = api.router
        self.storage = api.storage
        self.service = PresenceService(api)
        self.last = self.service.last
        api.provide("presence", self.service)
        api.declare(AVAILABLE_EVENT)
        api.hook("presence/outbound", self.on_outbound)
        api.hook("presence/host", self.on_host)
        api.hook("presence/bare", self.on_bare)
        api.hook("presence/full", self.on_full)
        api.hook("session-closed", self.on_closed)
        api.hook("stream-features", self.features)
        # The presence of other workers' sessions, kept here as theirs is (probes,
        # broadcasts and §8.5 message delivery read it the same way).
        api.on_mirror(self.mirror)
        api.on_handover(self.export, self.restore)

    def export(self, session: Any) -> dict[str, Any] | None:
        """The session's presence, for the worker or node it moves to."""
        st = self.api.peek_state(session)
        if st is None:
            return None
        return {"presence": None if st.presence is None
                else st.presence.to_bytes(CLIENT_NS).decode(),
                "priority": st.priority, "directed": sorted(map(str, st.directed or ()))}

    def restore(self, session: Any, value: Any) -> None:
        st = self.api.state(session, PresenceState)
        text = value.get("presence")
        st.presence = decode_stanza(text.encode()) if text else None
        st.priority = int(value.get("priority") or 0)
        directed = {j for j in map(jid_or_none, value.get("directed") or ()) if j is not None}
        st.directed = directed or None
        if st.presence is not None:
            self.api.share(session, st.presence)

    def mirror(self, session: Any, stanza: Any) -> None:
        st = self.api.state(session, PresenceState)
        st.presence = stanza
        st.priority = _priority(stanza) if stanza is not None else 0

    @property
    def rosters(self) -> Any:
        return self.api.service("roster")

    async def route(self, stanza: Element) -> None:
        result = self.router.route(stanza, None)
        if result is not None:
            await result

    # -- outbound subscription stanzas (Appendix A.2) ---------------------------------------

    async def outbound_subscription(self, stanza: Element, session: Any) -> bool:
        stype = stanza.attrs["type"]
        contact = _bare(stanza.get("to"))
        user = session.jid.bare
        if contact is None or contact == user:
            return True
        cjid = str(contact)
        seen: list[Outcome] = []

        def change(old: RosterItem | None) -> RosterItem | None:
            outcome = outbound(rosters.state_of(old), stype)
            seen.append(outcome)
            if outcome.state == rosters.state_of(old) and old is not None:
                return None
            listed = (old is not None and old.listed) or stype in ("subscribe", "subscribed")
            return _with_state(old, cjid, outcome.state, listed=listed)

        result = await self.rosters.update(user, cjid, change, announce=False)
        if seen and seen[-1].passed_on:
            # RFC 6121 §3.1.2: stamped with the bare JID, addressed to the bare JID.
            await self.route(addressed(stanza, cjid, str(user)))
        self.rosters.announce_change(user, cjid, result)
        return True

    # -- inbound subscription stanzas (Appendix A.3) ---------------------------------------

    async def inbound_subscription(self, stanza: Element, target: JID) -> None:
        api, router = self.api, self.router
        stype = stanza.attrs["type"]
        sender = _bare(stanza.get("from"))
        if sender is None or sender == target:
            return
        username, domain = rosters.account(target)
        if not await self.storage.account_exists(username, domain):
            if stype == "subscribe":  # §3.1.3: no such contact
                api.send(presence("unsubscribed", str(target), str(sender)))
            return
        sjid = str(sender)
        request = addressed(stanza, str(target), sjid)
        seen: list[Outcome] = []

        def change(old: RosterItem | None) -> RosterItem | None:
            outcome = inbound(rosters.state_of(old), stype)
            seen.append(outcome)
            if outcome.state == rosters.state_of(old) and old is not None:
                return None
            item = _with_state(old, sjid, outcome.state)
            if outcome.state.pending_in and not item.request:
                item = item.replace(request=encode_stanza(request))
            return item

        result = await self.rosters.update(target, sjid, change, announce=False)
        outcome = seen[-1] if seen else None
        if outcome is not None and outcome.passed_on:
            for session in router.sessions.resources(target):
                if self.last(session) is not None:
                    router.deliver(session, request.copy())
        if outcome is not None and outcome.auto_reply:
            await self.route(presence(outcome.auto_reply, str(target), sjid))
            if outcome.state == rosters.state_of(result.before):
                # already subscribed: still tell the contact where we are (§3.1.3)
                self.rosters.presence_from_resources(target, sjid, True)
        self.rosters.announce_change(target, sjid, result)

    # -- probes ---------------------------------------------------------------------------------

    async def probe(self, stanza: Element, target: JID) -> None:
        prober = _bare(stanza.get("from"))
        if prober is None:
            return
        item = (await self.rosters.get(target)).get(str(prober))
        if not rosters.state_of(item).has_from:
            return
        answer_to = stanza.get("from")
        current = [(s, p) for s in self.router.sessions.resources(target)
                   if (p := self.last(s)) is not None]
        if not current:
            self.api.send(presence("unavailable", str(target), answer_to))
        for session, their in current:
            self.api.send(addressed(their, answer_to, session.jid.full))

    # -- broadcasts ---------------------------------------------------------------------------

    def to_own_resources(self, session: Any, stanza: Element) -> None:
        for other in self.router.sessions.resources(session.jid.bare):
            if self.last(other) is not None:
                self.router.deliver(other, addressed(stanza, other.jid.full))

    async def available(self, stanza: Element, session: Any) -> None:
        api, router = self.api, self.router
        st = api.state(session, PresenceState)
        initial = st.presence is None
        stanza.attrs.pop("to", None)
        # Kept as is, not copied: nothing else holds the stanza once this hook has run,
        # and every use below and later (probes, broadcasts) sends copies of it.
        st.presence = stanza
        st.priority = _priority(stanza)
        api.share(session, stanza)
        user = session.jid.bare
        # one roster read serves the broadcast, the probes and the pending requests
        items = (await self.rosters.get(user)).items
        has_from, has_to = _subscribers(items)
        for contact in has_from:
            api.send(addressed(stanza, contact))
        self.to_own_resources(session, stanza)
        if initial:
            for other in router.sessions.resources(user):
                their = self.last(other)
                if other is not session and their is not None:
                    router.deliver(session, addressed(their, session.jid.full, other.jid.full))
            for contact in has_to:
                api.send(presence("probe", str(user), contact))
            self.redeliver_requests(session, items)
        await api.fire_async(AVAILABLE_EVENT, session, initial)

    def redeliver_requests(self, session: Any, items: tuple[RosterItem, ...]) -> None:
        for item in items:
            if item.request:
                try:
                    request = decode_stanza(item.request)
                except Exception:  # a damaged row must not block the login
                    self.api.log.warning("unreadable subscription request from %s", item.jid)
                    continue
                request.attrs["to"] = str(session.jid.bare)
                self.router.deliver(session, request)

    async def unavailable(self, stanza: Element | None, session: Any) -> None:
        """Broadcast unavailable presence for ``session`` (sent or implied by a drop)."""
        st = self.api.peek_state(session)
        if st is None or st.presence is None:
            return
        st.presence = None
        self.api.share(session, None)
        if stanza is None:
            stanza = Element("presence", CLIENT_NS, {"type": "unavailable"}, [])
        stanza.attrs.pop("to", None)
        stanza.attrs["from"] = session.jid.full
        has_from, _ = _subscribers((await self.rosters.get(session.jid.bare)).items)
        for jid in unavailable_recipients(has_from, st.directed):
            self.api.send(addressed(stanza, jid))
        st.directed = None
        self.to_own_resources(session, stanza)
        if self.router.sessions.get(session.jid) is session:
            self.router.deliver(session, addressed(stanza, session.jid.full))

    # -- hooks ------------------------------------------------------------------------------------

    def on_outbound(self, stanza: Element, session: Any) -> Any:
        ptype = stanza.get("type")
        if ptype in SUBSCRIPTION_TYPES:
            return self.outbound_subscription(stanza, session)
        to = stanza.get("to")
        if to is not None and ptype in (None, "unavailable"):
            # Directed presence (§4.6): remember it, to owe an unavailable one later.
            try:
                target = JID(to)
            except JIDError:
                return False
            st = self.api.peek_state(session)
            if st is not None:
                st.sent_directed(target, ptype is None)
        return False

    def on_host(self, stanza: Element, origin: Any) -> Any:
        if origin is None or stanza.get("to") is not None:
            return True  # presence to the server itself: nothing to do
        ptype = stanza.get("type")
        if ptype is None:
            return self.available(stanza, origin)
        if ptype == "unavailable":
            return self.unavailable(stanza, origin)
        return True

    def on_bare(self, stanza: Element, origin: Any) -> Any:
        target = _bare(stanza.get("to"))
        if target is None:
            return True
        ptype = stanza.get("type")
        if ptype in SUBSCRIPTION_TYPES:
            return self.inbound_subscription(stanza, target)
        if ptype == "probe":
            return self.probe(stanza, target)
        for session in self.router.sessions.resources(target):
            if self.last(session) is not None:
                self.router.deliver(session, stanza.copy())
        return True

    def on_full(self, stanza: Element, origin: Any, session: Any) -> Any:
        ptype = stanza.get("type")
        if ptype in SUBSCRIPTION_TYPES or ptype == "probe":
            return self.on_bare(stanza, origin)
        if session is not None:
            self.router.deliver(session, stanza)
        return True

    def on_closed(self, session: Any, abrupt: bool) -> Any:
        if self.last(session) is not None:
            return self.unavailable(None, session)
        return None

    @staticmethod
    def features(session: Any, feats: Element) -> None:
        feats.subelement("sub", PREAPPROVAL_NS)
