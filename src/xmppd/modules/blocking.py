"""XEP-0191: blocking command.

A blocked JID matches the way XEP-0016 items do: a full JID matches only itself, a bare
JID every resource of it, a domain every address at it (``domain/resource`` that resource).

Inbound, from a blocked sender: messages and IQ get/set are answered with
``service-unavailable`` (§3.4 leaves the blocking invisible), presence and everything
else is dropped.  Outbound, to a blocked contact: messages and IQs get ``not-acceptable``
with ``<blocked xmlns='urn:xmpp:blocking:errors'/>``; presence is dropped, including the
presence the server sends in the user's name (broadcasts, probe answers).  Newly blocked
contacts get unavailable presence from each available resource.

Block lists are cached in memory for accounts with bound sessions (loaded at bind, dropped
with the last session); other lookups go to the storage.  ``stanza/inbound`` can only use
the cache (it is synchronous): it is the last line, for IQs to full JIDs.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from xmppd.core.moduleapi import ModuleAPI
from xmppd.eager import start_eagerly
from xmppd.jid import JID, JIDError
from xmppd.xml.element import Element
from xmppd.xml.stanza import CLIENT_NS, StanzaError, error_reply, own_account, reply

from . import roster as rosters

NAME = "blocking"
XEPS = ("XEP-0191",)
BLOCKING_NS = "urn:xmpp:blocking"
BLOCKING_ERRORS_NS = "urn:xmpp:blocking:errors"
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


def _jid(text: str | None) -> JID | None:
    try:
        return JID(text) if text else None
    except JIDError:
        return None


def load(api: ModuleAPI) -> None:
    router = api.router
    storage = api.storage
    hosts = api.hosts
    cache: dict[JID, frozenset[str]] = {}

    def local_user(jid: JID | None) -> bool:
        return jid is not None and jid.localpart is not None and jid.domain in hosts

    async def blocklist(bare: JID) -> frozenset[str]:
        cached = cache.get(bare)
        if cached is not None:
            return cached
        # The common empty list is the shared _EMPTY: one cached list per bound account.
        items = frozenset(await storage.blocklist(bare.localpart or "", bare.domain)) or _EMPTY
        if router.sessions.count(bare):
            cache[bare] = items
        return items

    def blocks(owner: JID | None, other: JID | None) -> bool | Any:
        """``owner`` (a local account) has blocked ``other``: a bool when the list is
        cached, else an awaitable bool."""
        if not local_user(owner) or other is None:
            return False
        cached = cache.get(owner.bare)
        if cached is not None:
            return matches(cached, other)
        return _blocks(owner.bare, other)

    async def _blocks(owner: JID, other: JID) -> bool:
        return matches(await blocklist(owner), other)

    async def resolve(value: Any) -> bool:
        return value if isinstance(value, bool) else await value

    # -- filtering ---------------------------------------------------------------------------

    def blocked_error(stanza: Element) -> Element:
        err = error_reply(stanza, "not-acceptable")
        err.find("error").subelement("blocked", BLOCKING_ERRORS_NS)
        return err

    def outbound(stanza: Element, session: Any) -> bool | Any:
        if cache.get(session.bare) == _EMPTY:  # the common case: nobody blocked
            return False
        verdict = blocks(session.jid, _jid(stanza.get("to")))
        if verdict is False:
            return False
        return _outbound(stanza, session, verdict)

    async def _outbound(stanza: Element, session: Any, verdict: Any) -> bool:
        if not await resolve(verdict):
            return False
        if stanza.name != "presence" and stanza.get("type") not in ("error", "result"):
            # straight to the session: the inbound filter would drop it (it is "from" the
            # blocked contact)
            session.send(blocked_error(stanza))
        return True

    def inbound(stanza: Element, origin: Any, *target: Any) -> bool | Any:
        if (
            target
            and target[0] is not None
            and stanza.name != "presence"
            and cache.get(target[0].bare) == _EMPTY
        ):
            return False  # a bound recipient who blocks nobody (the common case)
        sender = _jid(stanza.get("from"))
        target = _jid(stanza.get("to"))
        theirs = blocks(target, sender)
        # presence the server sends in a user's name to someone that user blocked
        ours = blocks(sender, target) if stanza.name == "presence" else False
        if theirs is False and ours is False:
            return False
        return _inbound(stanza, theirs, ours)

    async def _inbound(stanza: Element, theirs: Any, ours: Any) -> bool:
        if await resolve(theirs):
            if stanza.name == "message" or stanza.get("type") in ("get", "set"):
                router.bounce(stanza, "service-unavailable")
            return True
        return await resolve(ours)

    def inbound_sync(stanza: Element, session: Any) -> bool:
        items = cache.get(session.bare)
        if not items:
            return False
        sender = _jid(stanza.get("from"))
        if sender is None or not matches(items, sender):
            return False
        if stanza.get("type") in ("get", "set"):
            router.bounce(stanza, "service-unavailable")
        return True

    def remote(stanza: Element, origin: Any) -> bool | Any:
        if stanza.name != "presence":
            return False
        verdict = blocks(_jid(stanza.get("from")), _jid(stanza.get("to")))
        return verdict if verdict is False else resolve(verdict)

    # -- the protocol ------------------------------------------------------------------------

    def items_of(payload: Element) -> list[str]:
        out = []
        for item in payload.findall("item", BLOCKING_NS):
            jid = _jid(item.get("jid"))
            if jid is None:
                raise StanzaError("jid-malformed")
            out.append(str(jid))
        return out

    def push(bare: JID, name: str, jids: list[str] | None) -> None:
        for session in router.sessions.resources(bare):
            if not api.peek_state(session):  # did not ask for the block list
                continue
            iq = Element("iq", CLIENT_NS, {"type": "set", "id": f"block{next(_push_ids)}",
                                           "to": session.jid.full}, [])
            el = iq.subelement(name, BLOCKING_NS)
            for jid in jids or ():
                el.subelement("item", attrs={"jid": jid})
            router.deliver(session, iq)

    async def get(iq: Element, origin: Any, payload: Element) -> Element:
        bare = own_account(iq, origin)
        api.state(origin, _requested)
        out = reply(iq)
        out.attrs.pop("from", None)
        el = out.subelement("blocklist", BLOCKING_NS)
        for jid in await storage.blocklist(bare.localpart or "", bare.domain):
            el.subelement("item", attrs={"jid": jid})
        return out

    async def contacts_seeing(bare: JID, jids: list[str]) -> list[str]:
        """Those of ``jids`` that receive the user's presence (subscription or directed)."""
        roster = await storage.roster(bare.localpart or "", bare.domain)
        presence = api.service("presence")
        directed = {str(j) for s in router.sessions.resources(bare)
                    for j in (presence.directed(s) if presence else ())}
        return [j for j in jids
                if rosters.state_of(roster.get(j)).has_from or j in directed]

    async def block(iq: Element, origin: Any, payload: Element) -> Element:
        bare = own_account(iq, origin)
        jids = items_of(payload)
        if not jids:
            raise StanzaError("bad-request", "nothing to block")
        seeing = await contacts_seeing(bare, jids)
        # The unavailable presence goes out before the block takes effect (it would be
        # filtered afterwards).
        for jid in seeing:
            api.service("roster").presence_from_resources(bare, jid, available=False)
        added = await storage.block(bare.localpart or "", bare.domain, jids)
        cache.pop(bare, None)
        await blocklist(bare)
        if added:
            push(bare, "block", added)
        out = reply(iq)
        out.attrs.pop("from", None)
        return out

    async def unblock(iq: Element, origin: Any, payload: Element) -> Element:
        bare = own_account(iq, origin)
        jids = items_of(payload)
        removed = await storage.unblock(bare.localpart or "", bare.domain, jids or None)
        cache.pop(bare, None)
        await blocklist(bare)
        if removed:
            push(bare, "unblock", removed if jids else None)
            for jid in await contacts_seeing(bare, removed):
                api.service("roster").presence_from_resources(bare, jid, available=True)
        out = reply(iq)
        out.attrs.pop("from", None)
        return out

    # -- cache lifecycle -----------------------------------------------------------------------

    def bound(session: Any) -> None:
        if session.bare in cache:
            return
        # Usually answered at once by the storage: a task only if the read must wait.
        rest = start_eagerly(blocklist(session.bare))
        if rest is not None:
            asyncio.ensure_future(rest)

    def closed(session: Any, abrupt: bool) -> None:
        if not router.sessions.count(session.jid.bare):
            cache.pop(session.jid.bare, None)

    api.iq_handler("get", BLOCKING_NS, "blocklist", get, to="bare")
    api.iq_handler("set", BLOCKING_NS, "block", block, to="bare")
    api.iq_handler("set", BLOCKING_NS, "unblock", unblock, to="bare")
    api.add_feature(BLOCKING_NS)
    for event in ("message/outbound", "presence/outbound", "iq/outbound"):
        api.hook(event, outbound, priority=100)
    for event in ("message/bare", "message/full", "presence/bare", "presence/full"):
        api.hook(event, inbound, priority=100)
    api.hook("stanza/inbound", inbound_sync, priority=100)
    api.hook("route/remote", remote, priority=100)
    api.hook("resource-bound", bound)
    # after the presence module's unavailable broadcast (priority 0), which still filters
    api.hook("session-closed", closed, priority=-100)
