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

from xmppd.core.moduleapi import ModuleAPI
from xmppd.jid import JID, JIDError
from xmppd.modules._subscription import TYPES as SUBSCRIPTION_TYPES
from xmppd.modules._subscription import Outcome, State, inbound, outbound
from xmppd.storage.base import RosterItem
from xmppd.xml.element import Element
from xmppd.xml.stanza import CLIENT_NS, decode_stanza, encode_stanza

from . import roster as rosters

NAME = "presence"
XEPS = ("RFC 6121 §3", "RFC 6121 §4")
PREAPPROVAL_NS = "urn:xmpp:features:pre-approval"
#: Module event: (session, initial: bool) -- a session sent available presence.
AVAILABLE_EVENT = "presence/available"


def _priority(stanza: Element) -> int:
    text = stanza.findtext("priority", CLIENT_NS)
    try:
        value = int(text.strip()) if text else 0
    except ValueError:
        return 0
    return max(-128, min(127, value))


def _bare(text: str | None) -> JID | None:
    try:
        return JID(text).bare if text else None
    except JIDError:
        return None


def _with_state(old: RosterItem | None, jid: str, state: State, **extra: Any) -> RosterItem:
    base = old if old is not None else RosterItem(jid, listed=False)
    return base.replace(
        subscription=state.subscription, ask=state.pending_out, approved=state.approved,
        request=(base.request or b"") if state.pending_in else None, **extra,
    )


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
        return frozenset(st.directed) if st is not None and st.directed else frozenset()


def load(api: ModuleAPI) -> None:
    router = api.router
    service = PresenceService(api)
    api.provide("presence", service)
    last = service.last
    storage = api.storage
    api.declare(AVAILABLE_EVENT)

    def presence(type_: str | None, frm: str, to: str) -> Element:
        attrs = {"from": frm, "to": to}
        if type_:
            attrs["type"] = type_
        return Element("presence", CLIENT_NS, attrs, [])

    async def route(stanza: Element) -> None:
        result = router.route(stanza, None)
        if result is not None:
            await result

    # -- outbound subscription stanzas (Appendix A.2) ---------------------------------------

    async def outbound_subscription(stanza: Element, session: Any) -> bool:
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

        result = await api.service("roster").update(user, cjid, change, announce=False)
        if seen and seen[-1].passed_on:
            # RFC 6121 §3.1.2: stamped with the bare JID, addressed to the bare JID.
            out = stanza.copy()
            out.attrs["from"] = str(user)
            out.attrs["to"] = cjid
            await route(out)
        api.service("roster").announce_change(user, cjid, result)
        return True

    # -- inbound subscription stanzas (Appendix A.3) ---------------------------------------

    async def inbound_subscription(stanza: Element, target: JID) -> None:
        stype = stanza.attrs["type"]
        sender = _bare(stanza.get("from"))
        if sender is None or sender == target:
            return
        username, domain = rosters.account(target)
        if not await storage.account_exists(username, domain):
            if stype == "subscribe":  # §3.1.3: no such contact
                api.send(presence("unsubscribed", str(target), str(sender)))
            return
        sjid = str(sender)
        request = stanza.copy()
        request.attrs["from"], request.attrs["to"] = sjid, str(target)
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

        result = await api.service("roster").update(target, sjid, change, announce=False)
        outcome = seen[-1] if seen else None
        if outcome is not None and outcome.passed_on:
            for session in router.sessions.resources(target):
                if last(session) is not None:
                    router.deliver(session, request.copy())
        if outcome is not None and outcome.auto_reply:
            await route(presence(outcome.auto_reply, str(target), sjid))
            if outcome.state == rosters.state_of(result.before):
                # already subscribed: still tell the contact where we are (§3.1.3)
                api.service("roster").presence_from_resources(target, sjid, True)
        api.service("roster").announce_change(target, sjid, result)

    # -- probes ---------------------------------------------------------------------------------

    async def probe(stanza: Element, target: JID) -> None:
        prober = _bare(stanza.get("from"))
        if prober is None:
            return
        username, domain = rosters.account(target)
        item = (await storage.roster(username, domain)).get(str(prober))
        if not rosters.state_of(item).has_from:
            return
        answer_to = stanza.get("from")
        current = [(s, p) for s in router.sessions.resources(target) if (p := last(s)) is not None]
        if not current:
            api.send(presence("unavailable", str(target), answer_to))
        for session, their in current:
            out = their.copy()
            out.attrs["from"], out.attrs["to"] = session.jid.full, answer_to
            api.send(out)

    # -- broadcasts ---------------------------------------------------------------------------

    async def subscribers(user: JID) -> tuple[list[str], list[str]]:
        """(contacts with 'from', contacts with 'to') of ``user``."""
        username, domain = rosters.account(user)
        return _subscribers((await storage.roster(username, domain)).items)

    def to_own_resources(session: Any, stanza: Element) -> None:
        for other in router.sessions.resources(session.jid.bare):
            if last(other) is not None:
                out = stanza.copy()
                out.attrs["to"] = other.jid.full
                router.deliver(other, out)

    async def available(stanza: Element, session: Any) -> None:
        st = api.state(session, PresenceState)
        initial = st.presence is None
        stanza.attrs.pop("to", None)
        # Kept as is, not copied: nothing else holds the stanza once this hook has run,
        # and every use below and later (probes, broadcasts) sends copies of it.
        st.presence = stanza
        st.priority = _priority(stanza)
        user = session.jid.bare
        # one roster read serves the broadcast, the probes and the pending requests
        username, domain = rosters.account(user)
        items = (await storage.roster(username, domain)).items
        has_from, has_to = _subscribers(items)
        for contact in has_from:
            out = stanza.copy()
            out.attrs["to"] = contact
            api.send(out)
        to_own_resources(session, stanza)
        if initial:
            for other in router.sessions.resources(user):
                their = last(other)
                if other is not session and their is not None:
                    out = their.copy()
                    out.attrs["from"], out.attrs["to"] = other.jid.full, session.jid.full
                    router.deliver(session, out)
            for contact in has_to:
                api.send(presence("probe", str(user), contact))
            redeliver_requests(session, items)
        await api.server.hooks.fire(AVAILABLE_EVENT, session, initial)

    def redeliver_requests(session: Any, items: tuple[RosterItem, ...]) -> None:
        for item in items:
            if item.request:
                try:
                    request = decode_stanza(item.request)
                except Exception:  # a damaged row must not block the login
                    api.log.warning("unreadable subscription request from %s", item.jid)
                    continue
                request.attrs["to"] = str(session.jid.bare)
                router.deliver(session, request)

    async def unavailable(stanza: Element | None, session: Any) -> None:
        """Broadcast unavailable presence for ``session`` (sent or implied by a drop)."""
        st = api.peek_state(session)
        if st is None or st.presence is None:
            return
        st.presence = None
        if stanza is None:
            stanza = Element("presence", CLIENT_NS, {"type": "unavailable"}, [])
        stanza.attrs.pop("to", None)
        stanza.attrs["from"] = session.jid.full
        has_from, _ = await subscribers(session.jid.bare)
        sent = set(has_from)
        for contact in has_from:
            out = stanza.copy()
            out.attrs["to"] = contact
            api.send(out)
        for jid in list(st.directed or ()):
            if str(jid) not in sent and str(jid.bare) not in sent:
                out = stanza.copy()
                out.attrs["to"] = str(jid)
                api.send(out)
        st.directed = None
        to_own_resources(session, stanza)
        if router.sessions.get(session.jid) is session:
            out = stanza.copy()
            out.attrs["to"] = session.jid.full
            router.deliver(session, out)

    # -- hooks ------------------------------------------------------------------------------------

    def on_outbound(stanza: Element, session: Any) -> Any:
        ptype = stanza.get("type")
        if ptype in SUBSCRIPTION_TYPES:
            return outbound_subscription(stanza, session)
        to = stanza.get("to")
        if to is not None and ptype in (None, "unavailable"):
            # Directed presence (§4.6): remember it, to owe an unavailable one later.
            try:
                target = JID(to)
            except JIDError:
                return False
            st = api.peek_state(session)
            if ptype is None and st is not None and st.presence is not None:
                if st.directed is None:
                    st.directed = set()
                st.directed.add(target)
            elif st is not None and st.directed:
                st.directed.discard(target)
        return False

    def on_host(stanza: Element, origin: Any) -> Any:
        if origin is None or stanza.get("to") is not None:
            return True  # presence to the server itself: nothing to do
        ptype = stanza.get("type")
        if ptype is None:
            return available(stanza, origin)
        if ptype == "unavailable":
            return unavailable(stanza, origin)
        return True

    def on_bare(stanza: Element, origin: Any) -> Any:
        target = _bare(stanza.get("to"))
        if target is None:
            return True
        ptype = stanza.get("type")
        if ptype in SUBSCRIPTION_TYPES:
            return inbound_subscription(stanza, target)
        if ptype == "probe":
            return probe(stanza, target)
        for session in router.sessions.resources(target):
            if last(session) is not None:
                router.deliver(session, stanza.copy())
        return True

    def on_full(stanza: Element, origin: Any, session: Any) -> Any:
        ptype = stanza.get("type")
        if ptype in SUBSCRIPTION_TYPES or ptype == "probe":
            return on_bare(stanza, origin)
        if session is not None:
            router.deliver(session, stanza)
        return True

    def on_closed(session: Any, abrupt: bool) -> Any:
        if last(session) is not None:
            return unavailable(None, session)
        return None

    def features(session: Any, feats: Element) -> None:
        feats.subelement("sub", PREAPPROVAL_NS)

    api.hook("presence/outbound", on_outbound)
    api.hook("presence/host", on_host)
    api.hook("presence/bare", on_bare)
    api.hook("presence/full", on_full)
    api.hook("session-closed", on_closed)
    api.hook("stream-features", features)
