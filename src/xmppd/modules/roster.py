"""RFC 6121 §2: roster management (get, set, remove), roster pushes and roster versioning.

Roster versions are integers per account, bumped on every visible change;
each row remembers the version of its last change, and removed items stay as tombstones,
so a client presenting version ``n`` gets exactly the rows changed after ``n`` as roster
pushes (RFC 6121 §2.6.3).  A version we cannot interpret (not a number, or newer than ours)
gets the full roster.

:func:`update` is the one way rows change (here and in the presence module): it stores the
change atomically, pushes it to interested resources, and sends the presence a change of
the 'from' half of a subscription calls for (current presence when the contact gains it,
RFC 6121 §3.1.5; unavailable presence when it loses it, §3.2.2).

Rosters live in this module's key-value store (layout and row semantics in
:mod:`xmppd.modules._rosterdata`); other modules read them through the service ``roster``
(:meth:`RosterService.get`), never from the storage.  Rosters are cached for accounts
with bound sessions (a login reads its roster for the roster request, the initial presence
and the final unavailable presence: once now); every change drops the cached copy, here
and, through ``ModuleAPI.changed``, on the other workers.
"""

from __future__ import annotations

import itertools
from typing import Any

from xmppd.core.module import Module, Option
from xmppd.core.moduleapi import ModuleAPI
from xmppd.jid import JID, JIDError, jid_or_none
from xmppd.modules import _rosterdata
from xmppd.modules._rosterdata import RosterChangeFn, RosterItem, RosterStore, RosterUpdate
from xmppd.modules._subscription import State
from xmppd.storage.base import StorageError
from xmppd.xml.element import Element
from xmppd.xml.stanza import CLIENT_NS, StanzaError, own_account, reply

ROSTER_NS = "jabber:iq:roster"
ROSTERVER_NS = "urn:xmpp:features:rosterver"
#: Longest accepted item name and group name, in characters (RFC 6121 §2.3.3: a
#: server-configured limit; option ``max_name_length``).
MAX_NAME_LENGTH = 1023

_push_ids = itertools.count(1)


def account(jid: JID) -> tuple[str, str]:
    """The storage key (username, domain) of a local JID."""
    return jid.localpart or "", jid.domain


def state_of(item: RosterItem | None) -> State:
    if item is None:
        return State()
    return State(item.subscription, item.ask, item.pending_in, item.approved)


def item_element(item: RosterItem) -> Element:
    """The ``<item/>`` a client sees (an unlisted row is shown as removed)."""
    attrs = {"jid": item.jid}
    if not item.listed:
        attrs["subscription"] = "remove"
        return Element("item", ROSTER_NS, attrs, [])
    if item.name:
        attrs["name"] = item.name
    attrs["subscription"] = item.subscription
    if item.ask:
        attrs["ask"] = "subscribe"
    if item.approved:
        attrs["approved"] = "true"
    el = Element("item", ROSTER_NS, attrs, [])
    for group in item.groups:
        el.subelement("group", text=group)
    return el


class RosterState:
    """A session's roster state: whether it requested the roster (RFC 6121 §2.1.6: only
    such resources get roster pushes)."""

    __slots__ = ("interested",)

    def __init__(self) -> None:
        self.interested = False


class RosterService:
    """Rosters for other modules (service ``roster``): reads, and the one way rows change."""

    def __init__(self, api: ModuleAPI) -> None:
        self._api = api
        self.store = RosterStore(api.open_store("keyvalue"))
        #: the rosters of accounts with bound sessions, by bare JID (dropped with the last)
        self.cache: dict[JID, _rosterdata.Roster] = {}
        #: bumped around every change: a read that overlapped one is not cached
        self.generation = 0

    async def get(self, owner: JID) -> _rosterdata.Roster:
        """Every stored row of ``owner``'s roster (listed or not) and the roster version:
        one key-value read, or none while the account is bound."""
        bare = owner.bare
        roster = self.cache.get(bare)
        if roster is not None:
            return roster
        generation = self.generation
        roster = await self.store.get(str(bare))
        if generation == self.generation and self._api.router.sessions.count(bare):
            self.cache[bare] = roster
        return roster

    def forget(self, bare: JID) -> None:
        """``bare``'s roster changed (or is changing): read it again when next needed."""
        self.generation += 1
        self.cache.pop(bare, None)

    def closed(self, session: Any, abrupt: bool) -> None:
        """The account's last session went: its roster is no longer kept."""
        bare = session.jid.bare
        if bare in self.cache and not self._api.router.sessions.count(bare):
            del self.cache[bare]

    async def changes(self, owner: JID, since: int) -> list[RosterItem]:
        """Rows whose visible state changed after version ``since``, oldest change first."""
        return await self.store.changes(str(owner.bare), since)

    def push(self, bare: JID, item: RosterItem, version: int | None) -> None:
        """Send a roster push to every resource of ``bare`` that requested the roster.

        The push has no 'from' (RFC 6121 §2.1.6: a client accepts pushes without one or
        from its own bare JID only).
        """
        api = self._api
        for session in api.router.sessions.resources(bare):
            st = api.peek_state(session)
            if st is None or not st.interested:
                continue
            iq = Element("iq", CLIENT_NS, {"type": "set", "id": f"push{next(_push_ids)}",
                                           "to": session.jid.full}, [])
            query = iq.subelement("query", ROSTER_NS)
            if version is not None:
                query.attrs["ver"] = str(version)
            query.append(item_element(item))
            api.router.deliver(session, iq)

    def presence_from_resources(self, owner: JID, contact: str, available: bool) -> None:
        """Send ``contact`` the current presence (or unavailable presence) of each available
        resource of ``owner``."""
        presence = self._api.service("presence")
        if presence is None:
            return
        router = self._api.router
        for session in router.sessions.resources(owner):
            current = presence.last(session)
            if current is None:
                continue
            if available:
                out = current.copy()
            else:
                out = Element("presence", CLIENT_NS, {"type": "unavailable"}, [])
            out.attrs["from"] = session.jid.full
            out.attrs["to"] = contact
            router.route_from_server(out)

    async def update(
        self, owner: JID, contact: str, change: RosterChangeFn, *, announce: bool = True
    ) -> RosterUpdate:
        """Apply ``change`` to ``owner``'s row for ``contact`` and push it; with
        ``announce``, also send the presence the change implies (else call
        :meth:`announce_change` later, e.g. after routing the subscription stanza that
        caused it, so that the contact sees it first)."""
        username, domain = account(owner)
        if not await self._api.storage.account_exists(username, domain):
            raise StorageError(f"no account {owner}")
        bare = owner.bare
        self.forget(bare)  # a read now may see the old roster: it must not be cached
        try:
            result = await self.store.update(str(bare), contact, change)
        finally:
            self.forget(bare)
        await self._api.changed(str(bare), _rosterdata.ROSTER_KEY)
        if result.pushed:
            self.push(owner, result.after, result.version)
        if announce:
            self.announce_change(owner, contact, result)
        return result

    def announce_change(self, owner: JID, contact: str, result: RosterUpdate) -> None:
        """Presence due to ``contact`` after a change of the 'from' half of the subscription."""
        had_from = state_of(result.before).has_from
        has_from = state_of(result.after).has_from
        if had_from != has_from:
            self.presence_from_resources(owner, contact, has_from)


def _parse_item(item: Element, max_len: int) -> tuple[str, str, tuple[str, ...], bool]:
    """(jid, name, groups, remove) of a roster set item, or StanzaError (RFC 6121 §2.3.3)."""
    raw = item.get("jid")
    if not raw:
        raise StanzaError("bad-request", "the item has no 'jid'")
    try:
        jid = str(JID(raw))
    except JIDError as exc:
        raise StanzaError("jid-malformed", str(exc)) from None
    remove = item.get("subscription") == "remove"
    name = item.get("name") or ""
    if len(name) > max_len:
        raise StanzaError("not-acceptable", "the name is too long")
    groups: list[str] = []
    for group in item.findall("group", ROSTER_NS):
        text = group.text
        if not text:
            # RFC 6121 §2.3.3 names not-acceptable for a group of zero length.
            raise StanzaError("not-acceptable", "empty group name")
        if len(text) > max_len:
            raise StanzaError("not-acceptable", "a group name is too long")
        if text in groups:
            raise StanzaError("bad-request", "duplicate group")
        groups.append(text)
    return jid, name, tuple(groups), remove


class Roster(Module):
    """Roster get/set with versioning; provides the service ``roster``
    (:class:`RosterService`)."""

    name = "roster"
    workers_safe = True
    stateful = True  # which sessions asked for the roster (pushes)
    xeps = ("RFC 6121 §2", "XEP-0237")
    options = {
        "max_name_length": Option(int, MAX_NAME_LENGTH, "longest item and group name, in "
                                  "characters (RFC 6121 §2.3.3)", min=1),
    }

    def reconfigure(self, api: ModuleAPI, old: Any) -> bool:
        self.max_len = api.options["max_name_length"]
        return True

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        self.max_len: int = api.options["max_name_length"]
        self.service = RosterService(api)
        api.provide("roster", self.service)
        api.iq_handler("get", ROSTER_NS, "query", self.roster_get, to="bare")
        api.iq_handler("set", ROSTER_NS, "query", self.roster_set, to="bare")
        api.hook("stream-features", self.features)
        api.hook("account-deleting", self.account_deleting)
        # after the presence module's unavailable broadcast, which reads the roster
        api.hook("session-closed", self.service.closed, priority=-10)
        api.on_changed(self.changed)
        api.on_mirror(self.mirror)
        api.on_handover(self.export, self.restore)

    def changed(self, owner: str, key: str) -> None:
        """Another worker changed ``owner``'s roster: the cached copy goes."""
        bare = jid_or_none(owner)
        if bare is not None:
            self.service.forget(bare)

    def export(self, session: Any) -> bool | None:
        """Whether the session asked for the roster, for the process it moves to."""
        st = self.api.peek_state(session)
        return True if st is not None and st.interested else None

    def restore(self, session: Any, value: Any) -> None:
        self.api.state(session, RosterState).interested = True
        self.api.share(session, True)

    def mirror(self, session: Any, value: Any) -> None:
        """A session of another worker requested the roster: pushes go to it from here."""
        self.api.state(session, RosterState).interested = bool(value)

    async def roster_get(self, iq: Element, origin: Any, payload: Element) -> Element | None:
        api = self.api
        bare = own_account(iq, origin)
        state = api.state(origin, RosterState)
        if not state.interested:
            state.interested = True
            api.share(origin, True)  # other workers push to it too
        ver = payload.get("ver")
        roster = await self.service.get(bare)
        out = reply(iq)
        out.attrs.pop("from", None)
        if ver is not None and ver.isdigit() and int(ver) <= roster.version:
            # §2.6.3: an empty result, then the changes as pushes (none if up to date).
            changes = await self.service.changes(bare, int(ver))
            api.router.deliver(origin, out)
            for item in changes:
                self.push_one(origin, item)
            return None
        query = out.subelement("query", ROSTER_NS)
        if ver is not None:
            query.attrs["ver"] = str(roster.version)
        for item in roster.listed():
            query.append(item_element(item))
        return out

    def push_one(self, session: Any, item: RosterItem) -> None:
        iq = Element("iq", CLIENT_NS, {"type": "set", "id": f"push{next(_push_ids)}",
                                       "to": session.jid.full}, [])
        query = iq.subelement("query", ROSTER_NS, attrs={"ver": str(item.version)})
        query.append(item_element(item))
        self.api.router.deliver(session, iq)

    async def roster_set(self, iq: Element, origin: Any, payload: Element) -> Element:
        bare = own_account(iq, origin)
        items = payload.findall("item", ROSTER_NS)
        if len(items) != 1 or len(list(payload.elements())) != 1:
            raise StanzaError("bad-request", "a roster set carries exactly one item")
        jid, name, groups, remove = _parse_item(items[0], self.max_len)
        if remove:
            await self.remove_item(bare, jid)
        else:
            def change(old: RosterItem | None) -> RosterItem:
                base = old if old is not None else RosterItem(jid)
                return base.replace(name=name, groups=groups, listed=True)

            await self.service.update(bare, jid, change)
        out = reply(iq)
        out.attrs.pop("from", None)
        return out

    async def remove_item(self, bare: JID, jid: str) -> None:
        current = (await self.service.get(bare)).get(jid)
        if current is None or not current.listed:
            raise StanzaError("item-not-found")
        state = state_of(current)
        await self.service.update(
            bare, jid, lambda old: RosterItem(jid, listed=False, version=old.version if old else 0)
        )
        # §2.5.2: cancel both halves of the subscription on the user's behalf.
        for stype, due in (("unsubscribe", state.has_to or state.pending_out),
                           ("unsubscribed", state.has_from or state.pending_in)):
            if due:
                self.api.send(Element("presence", CLIENT_NS,
                                      {"type": stype, "from": str(bare), "to": jid}, []))

    async def account_deleting(self, jid: JID) -> None:
        """An account is being deleted: take it out of its local contacts' rosters (with
        roster pushes); remote contacts are told both subscriptions are cancelled."""
        storage = self.api.storage
        user = str(jid)
        roster = await self.service.get(jid)

        def remove(old: RosterItem | None) -> RosterItem | None:
            if old is None or (not old.listed and old.request is None):
                return None  # nothing to remove
            return RosterItem(user, listed=False, version=old.version)

        for item in roster.items:
            try:
                contact = JID(item.jid)
            except JIDError:
                continue
            if contact.domain in self.api.hosts:
                if contact.localpart and await storage.account_exists(*account(contact)):
                    await self.service.update(contact, user, remove)
                continue
            state = state_of(item)
            for stype, due in (("unsubscribe", state.has_to or state.pending_out),
                               ("unsubscribed", state.has_from or state.pending_in)):
                if due:
                    self.api.send(Element("presence", CLIENT_NS,
                                          {"type": stype, "from": user, "to": item.jid}, []))

    @staticmethod
    def features(session: Any, feats: Element) -> None:
        feats.subelement("ver", ROSTERVER_NS)
