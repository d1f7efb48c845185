"""XEP-0191: blocking command.

A blocked JID matches the way XEP-0016 items do: a full JID matches only itself, a bare
JID every resource of it, a domain every address at it (``domain/resource`` that resource).

Inbound, from a blocked sender: messages and IQ get/set are answered with
``service-unavailable`` (§3.4 leaves the blocking invisible), presence and everything
else is dropped.  Outbound, to a blocked contact: messages and IQs get ``not-acceptable``
with ``<blocked xmlns='urn:xmpp:blocking:errors'/>``; presence is dropped, including the
presence the server sends in the user's name (broadcasts, probe answers).  Newly blocked
contacts get unavailable presence from each available resource.

A block list is one value in this module's key-value store (owner = the user's bare JID,
key ``list``: the blocked JIDs, sorted); a block or unblock of several JIDs is one atomic
update.  Block lists are cached in memory for accounts with bound sessions (loaded at
bind, dropped with the last session); other lookups go to the store.  Accounts whose list
was read empty are remembered (a bounded set, forgotten on any change here or on another
worker): most users block nobody, and their next login then needs no read.  ``stanza/inbound`` can only use
the cache (it is synchronous): it is the last line, for IQs to full JIDs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Set
from typing import Any

from xmppd.core.module import Module
from xmppd.core.moduleapi import Interest, ModuleAPI
from xmppd.jid import JID, jid_or_none
from xmppd.storage.stores import UNCHANGED, KeyValueStore
from xmppd.xml.element import Element
from xmppd.xml.stanza import CLIENT_NS, StanzaError, error_reply, own_account, reply

from . import roster as rosters

BLOCKING_NS = "urn:xmpp:blocking"
BLOCKING_ERRORS_NS = "urn:xmpp:blocking:errors"
LIST_KEY = "list"


def _requested() -> bool:
    """A session's state here: it asked for the block list (and so gets pushes)."""
    return True


_push_ids = itertools.count(1)


def matches(blocked: set[str] | frozenset[str], jid: JID) -> bool:
    """Whether ``jid`` is covered by an entry of ``blocked``."""
    if not blocked:
        return False
    candidates = [jid.full, str(jid.bare), jid.domain]
    if jid.resource is not None:
        candidates.append(f"{jid.domain}/{jid.resource}")
    return any(c in blocked for c in candidates)


_EMPTY: frozenset[str] = frozenset()
#: How many accounts with an empty block list are remembered (~150 bytes each: their
#: bare JIDs and the dict entries, 2.5 MB at most).
EMPTY_MAX = 16384



async def resolve(value: Any) -> bool:
    return value if isinstance(value, bool) else await value


def blocked_error(stanza: Element) -> Element:
    """The error a user gets for a stanza to someone they blocked (XEP-0191 §3.3)."""
    err = error_reply(stanza, "not-acceptable")
    err.find("error").subelement("blocked", BLOCKING_ERRORS_NS)
    return err


def items_of(payload: Element) -> list[str]:
    """The JIDs of a block/unblock request; StanzaError on a malformed one."""
    out = []
    for item in payload.findall("item", BLOCKING_NS):
        jid = jid_or_none(item.get("jid"))
        if jid is None:
            raise StanzaError("jid-malformed")
        out.append(str(jid))
    return out


async def stored_list(store: KeyValueStore, owner: str) -> list[str]:
    """The JIDs ``owner`` (a bare JID) blocks, sorted."""
    return await store.get(owner, LIST_KEY, [])


async def add_to_list(store: KeyValueStore, owner: str, jids: list[str]) -> list[str]:
    """Block ``jids`` (one transaction); returns those that were not blocked yet."""
    added: list[str] = []

    def add(old: list[str] | None) -> Any:
        current = set(old or ())
        added[:] = [j for j in dict.fromkeys(jids) if j not in current]
        return sorted(current.union(added)) if added else UNCHANGED

    await store.update(owner, LIST_KEY, add)
    return added


async def remove_from_list(
    store: KeyValueStore, owner: str, jids: list[str] | None
) -> list[str]:
    """Unblock ``jids`` (all for None; one transaction); returns those removed, sorted."""
    removed: list[str] = []

    def remove(old: list[str] | None) -> Any:
        current = set(old or ())
        removed[:] = sorted(current if jids is None else current.intersection(jids))
        if not removed:
            return UNCHANGED
        return sorted(current.difference(removed)) or None  # an empty list: no key

    await store.update(owner, LIST_KEY, remove)
    return removed


class BlockLists:
    """Block lists, cached for accounts with bound sessions (the rest read from the store)."""

    def __init__(
        self, store: KeyValueStore, sessions: Any, hosts: Set[str],
        quiet: Callable[[JID, bool], None] | None = None,
    ) -> None:
        self.store = store
        self.sessions = sessions
        self.hosts = hosts
        self.cache: dict[JID, frozenset[str]] = {}
        #: told whether an account's cached list is the empty one (its stanzas then need
        #: no filtering), whenever the cache changes
        self.quiet = quiet or (lambda bare, quiet: None)
        #: bumped by every reload: a read that started before one must not be cached
        self.generation = 0
        #: accounts whose stored list is empty (insertion-ordered: the oldest go first)
        self.empty: dict[JID, None] = {}

    def _remember_empty(self, bare: JID) -> None:
        empty = self.empty
        if len(empty) >= EMPTY_MAX:
            del empty[next(iter(empty))]
        empty[bare] = None

    def known_empty(self, bare: JID) -> bool:
        """``bare``'s list is known to be empty: then cached for its bound sessions at
        once, without a read (True)."""
        if bare not in self.empty:
            return False
        if self.sessions.count(bare):
            self.cache[bare] = _EMPTY
            self.quiet(bare, True)
        return True

    def local_user(self, jid: JID | None) -> bool:
        return jid is not None and jid.localpart is not None and jid.domain in self.hosts

    async def get(self, bare: JID) -> frozenset[str]:
        cached = self.cache.get(bare)
        if cached is not None:
            return cached
        if self.known_empty(bare):
            return _EMPTY
        generation = self.generation
        # The common empty list is the shared _EMPTY: one cached list per bound account.
        items = frozenset(await stored_list(self.store, str(bare))) or _EMPTY
        if generation == self.generation:
            if items is _EMPTY:
                self._remember_empty(bare)
            if self.sessions.count(bare):
                self.cache[bare] = items
                self.quiet(bare, items is _EMPTY)
        return items

    async def reload(self, bare: JID) -> None:
        """Read ``bare``'s list again; the cached copy (if any) stays in use until the new
        one replaces it, so the filters never run without it meanwhile."""
        self.generation += 1
        generation = self.generation
        self.empty.pop(bare, None)  # changed: read again when next needed
        items = frozenset(await stored_list(self.store, str(bare))) or _EMPTY
        if generation != self.generation:
            return  # a later reload reads newer data
        if items is _EMPTY:
            self._remember_empty(bare)
        if self.sessions.count(bare):
            self.cache[bare] = items
        else:
            self.cache.pop(bare, None)
        self.quiet(bare, bare in self.cache and items is _EMPTY)

    def blocks(self, owner: JID | None, other: JID | None) -> bool | Any:
        """``owner`` (a local account) has blocked ``other``: a bool when the list is
        cached, else an awaitable bool."""
        if not self.local_user(owner) or other is None:
            return False
        cached = self.cache.get(owner.bare)
        if cached is not None:
            return matches(cached, other)
        return self._blocks(owner.bare, other)

    async def _blocks(self, owner: JID, other: JID) -> bool:
        return matches(await self.get(owner), other)


class Blocking(Module):
    """The blocking command and the filters that enforce it."""

    name = "blocking"
    stateful = True  # which sessions asked for the block list (pushes)
    #: the cached lists are refreshed on a change by another worker (ModuleAPI.changed);
    #: which sessions asked for the list is shared (ModuleAPI.share)
    workers_safe = True
    xeps = ("XEP-0191",)
    depends = ("roster",)
    soft_depends = ("presence",)  # for directed presence, when it is loaded

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        self.router = api.router
        self.store = api.open_store("keyvalue")
        self.lists = BlockLists(self.store, api.router.sessions, api.hosts, api.quiet)
        self.cache = self.lists.cache
        api.iq_handler("get", BLOCKING_NS, "blocklist", self.get, to="bare")
        api.iq_handler("set", BLOCKING_NS, "block", self.block, to="bare")
        api.iq_handler("set", BLOCKING_NS, "unblock", self.unblock, to="bare")
        api.add_feature(BLOCKING_NS)
        # On the message path the filters act only for an account whose cached list is
        # not the empty one (quiet otherwise: BlockLists tells api.quiet on every change).
        filters = Interest(account=True)
        for event in ("message/outbound", "presence/outbound", "iq/outbound"):
            api.hook(event, self.outbound, priority=100,
                     interest=filters if event == "message/outbound" else None)
        for event in ("message/bare", "message/full", "presence/bare", "presence/full"):
            api.hook(event, self.inbound, priority=100,
                     interest=filters if event == "message/full" else None)
        api.hook("stanza/inbound", self.inbound_sync, priority=100, interest=filters)
        api.hook("route/remote", self.remote, priority=100)
        api.hook("resource-bound", self.bound)
        # after the presence module's unavailable broadcast (priority 0), which still filters
        api.hook("session-closed", self.closed, priority=-100)
        api.on_mirror(self.mirror)
        api.on_handover(self.export, self.restore)
        api.on_changed(self.changed)

    # -- filtering ---------------------------------------------------------------------------

    def outbound(self, stanza: Element, session: Any) -> bool | Any:
        if self.cache.get(session.bare) == _EMPTY:  # the common case: nobody blocked
            return False
        verdict = self.lists.blocks(session.jid, jid_or_none(stanza.get("to")))
        if verdict is False:
            return False
        return self._outbound(stanza, session, verdict)

    async def _outbound(self, stanza: Element, session: Any, verdict: Any) -> bool:
        if not await resolve(verdict):
            return False
        if stanza.name != "presence" and stanza.get("type") not in ("error", "result"):
            # straight to the session: the inbound filter would drop it (it is "from" the
            # blocked contact)
            session.send(blocked_error(stanza))
        return True

    def inbound(self, stanza: Element, origin: Any, *target: Any) -> bool | Any:
        if (
            target
            and target[0] is not None
            and stanza.name != "presence"
            and self.cache.get(target[0].bare) == _EMPTY
        ):
            return False  # a bound recipient who blocks nobody (the common case)
        sender = jid_or_none(stanza.get("from"))
        recipient = jid_or_none(stanza.get("to"))
        theirs = self.lists.blocks(recipient, sender)
        # presence the server sends in a user's name to someone that user blocked
        ours = self.lists.blocks(sender, recipient) if stanza.name == "presence" else False
        if theirs is False and ours is False:
            return False
        return self._inbound(stanza, theirs, ours)

    async def _inbound(self, stanza: Element, theirs: Any, ours: Any) -> bool:
        if await resolve(theirs):
            if stanza.name == "message" or stanza.get("type") in ("get", "set"):
                self.router.bounce(stanza, "service-unavailable")
            return True
        return await resolve(ours)

    def inbound_sync(self, stanza: Element, session: Any) -> bool:
        items = self.cache.get(session.bare)
        if not items:
            return False
        sender = jid_or_none(stanza.get("from"))
        if sender is None or not matches(items, sender):
            return False
        if stanza.get("type") in ("get", "set"):
            self.router.bounce(stanza, "service-unavailable")
        return True

    def remote(self, stanza: Element, origin: Any) -> bool | Any:
        if stanza.name != "presence":
            return False
        verdict = self.lists.blocks(jid_or_none(stanza.get("from")), jid_or_none(stanza.get("to")))
        return verdict if verdict is False else resolve(verdict)

    # -- the protocol ------------------------------------------------------------------------

    def push(self, bare: JID, name: str, jids: list[str] | None) -> None:
        for session in self.router.sessions.resources(bare):
            if not self.api.peek_state(session):  # did not ask for the block list
                continue
            iq = Element("iq", CLIENT_NS, {"type": "set", "id": f"block{next(_push_ids)}",
                                           "to": session.jid.full}, [])
            el = iq.subelement(name, BLOCKING_NS)
            for jid in jids or ():
                el.subelement("item", attrs={"jid": jid})
            self.router.deliver(session, iq)

    async def get(self, iq: Element, origin: Any, payload: Element) -> Element:
        bare = own_account(iq, origin)
        self.api.state(origin, _requested)
        self.api.share(origin, True)
        out = reply(iq)
        out.attrs.pop("from", None)
        el = out.subelement("blocklist", BLOCKING_NS)
        for jid in await stored_list(self.store, str(bare)):
            el.subelement("item", attrs={"jid": jid})
        return out

    async def contacts_seeing(self, bare: JID, jids: list[str]) -> list[str]:
        """Those of ``jids`` that receive the user's presence (subscription or directed)."""
        roster = await self.api.service("roster").get(bare)
        presence = self.api.service("presence")
        directed = {str(j) for s in self.router.sessions.resources(bare)
                    for j in (presence.directed(s) if presence else ())}
        return [j for j in jids
                if rosters.state_of(roster.get(j)).has_from or j in directed]

    async def block(self, iq: Element, origin: Any, payload: Element) -> Element:
        bare = own_account(iq, origin)
        jids = items_of(payload)
        if not jids:
            raise StanzaError("bad-request", "nothing to block")
        seeing = await self.contacts_seeing(bare, jids)
        # The unavailable presence goes out before the block takes effect (it would be
        # filtered afterwards).
        for jid in seeing:
            self.api.service("roster").presence_from_resources(bare, jid, available=False)
        added = await add_to_list(self.store, str(bare), jids)
        await self.lists.reload(bare)
        await self.api.changed(str(bare), LIST_KEY)
        if added:
            self.push(bare, "block", added)
        out = reply(iq)
        out.attrs.pop("from", None)
        return out

    async def unblock(self, iq: Element, origin: Any, payload: Element) -> Element:
        bare = own_account(iq, origin)
        jids = items_of(payload)
        removed = await remove_from_list(self.store, str(bare), jids or None)
        await self.lists.reload(bare)
        await self.api.changed(str(bare), LIST_KEY)
        if removed:
            self.push(bare, "unblock", removed if jids else None)
            for jid in await self.contacts_seeing(bare, removed):
                self.api.service("roster").presence_from_resources(bare, jid, available=True)
        out = reply(iq)
        out.attrs.pop("from", None)
        return out

    # -- cache lifecycle -----------------------------------------------------------------------

    def bound(self, session: Any) -> None:
        bare = session.bare
        if bare not in self.cache and not self.lists.known_empty(bare):
            # Usually answered at once by the storage: a task only if the read must wait.
            self.api.spawn(self.lists.get(bare))

    def export(self, session: Any) -> bool | None:
        """Whether the session asked for the block list, for the process it moves to."""
        return True if self.api.peek_state(session) else None

    def restore(self, session: Any, value: Any) -> None:
        self.api.state(session, _requested)
        self.api.share(session, True)

    def mirror(self, session: Any, requested: Any) -> None:
        """Another worker's session asked for the block list: it gets pushes from here."""
        if requested:
            self.api.state(session, _requested)
        else:
            self.api.drop_state(session)

    async def changed(self, owner: str, key: str) -> None:
        """Another worker changed ``owner``'s block list: refresh the cached copy before
        acknowledging (its filters here must apply the new list from then on)."""
        bare = jid_or_none(owner)
        if bare is not None:
            await self.lists.reload(bare)

    def closed(self, session: Any, abrupt: bool) -> None:
        if not self.router.sessions.count(session.jid.bare):
            self.cache.pop(session.jid.bare, None)
