"""XEP-0313 message archive management (``urn:xmpp:mam:2``) with XEP-0359 stanza ids.

What is archived (XEP-0313 §7.1): ``chat`` and ``normal`` messages with a ``<body/>`` (or
the XEP-0334 ``<store/>`` hint), unless they carry ``<no-store/>`` or
``<no-permanent-store/>``; both directions: a message a local client sends goes into the
sender's archive (``message/outbound``), a message to a local account into the
recipient's (``message/full``, ``message/bare``: also when it is stored offline), each
subject to the owner's preferences (``<prefs/>``: ``default`` always / never / roster plus
``<always/>`` and ``<never/>`` JID lists, kept in the module's key-value store).

Stanza ids (XEP-0359): the archive id of a received message is added to the delivered
copy as ``<stanza-id xmlns='urn:xmpp:sid:0' by='user@domain' id='...'/>``; a sent
message's id goes into its carbon copies (the ``mam`` service's
:meth:`Archive.sent_stanza_id`), never to the recipient.  A ``stanza-id`` whose ``by`` is
one of our domains or accounts is removed from every message a client or peer sends us
(only ids we made carry our name); ``origin-id`` is kept.

Durability without waiting: an archive write is started (``start_append_shared``: the
SQLite backend writes the appends of one event-loop iteration as one batch, one
transaction, with one future for all of them, staged as one row and merged into the
archive in bulk later) and not awaited; the serialized message is
shared by the sender's and the recipient's archives while the stanza is unchanged in
between; for a local sender it is ``session.track``-ed, so stream management can
acknowledge once it is durable.  What
cannot be archived is refused, not delivered: a message nested so deeply that its MAM
result (three more levels) would pass ``limits.max_depth`` gets ``policy-violation``.

Queries: ``<iq type='set'><query xmlns='urn:xmpp:mam:2' queryid=.../>`` with a data form
(``with``, ``start``, ``end``, ``after-id``, ``before-id``, ``ids``) and XEP-0059 RSM
(``max`` capped at ``max_page``, ``after``, ``before`` — empty for the last page;
``index`` is ``feature-not-implemented``); results go to the asking resource, then the IQ
result with ``<fin complete=...>`` and ``first``/``last``/``count``.  An unknown
``after``/``before`` id is ``item-not-found``.  ``with`` matches the stored peer's bare
JID; a full JID narrows to that resource (no ``count`` then).

Retention: ``retention_days`` > 0 deletes older items daily.  Account deletion removes the
archive with the rest of the account's data (``storage.delete_user_data``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from xmppd.core.module import Module, Option
from xmppd.core.moduleapi import ModuleAPI
from xmppd.jid import JID, jid_or_none
from xmppd.storage.stores import ArchiveItem, ItemNotFound, new_item_id
from xmppd.xml.element import Element, escape_attr
from xmppd.xml.stanza import (
    CLIENT_NS,
    StanzaError,
    encode_stanza,
    error_reply,
    own_account,
    reply,
)
from xmppd.xml.tokenizer import Tokenizer

from . import _forms, _rsm

MAM_NS = "urn:xmpp:mam:2"
MAM_EXTENDED_NS = "urn:xmpp:mam:2#extended"
SID_NS = "urn:xmpp:sid:0"
FORWARD_NS = "urn:xmpp:forward:0"
DELAY_NS = "urn:xmpp:delay"
HINTS_NS = "urn:xmpp:hints"

#: Levels a stored message gains inside a MAM result: message/result/forwarded.
RESULT_WRAPPING = 3
#: The smallest XML one level of nesting can take (``<a>`` + ``</a>``): a shorter message
#: cannot be too deep, so most need no walk.
_MIN_BYTES_PER_LEVEL = 7
PREFS_KEY = "prefs"
_PREFS_CACHE_SIZE = 10000

QUERY_FIELDS = (
    ("with", "jid-single", "With"),
    ("start", "text-single", "Start"),
    ("end", "text-single", "End"),
    ("after-id", "text-single", "After this id"),
    ("before-id", "text-single", "Before this id"),
    ("ids", "text-multi", "These ids"),
)
_FIELD_NAMES = frozenset(["FORM_TYPE", *(f[0] for f in QUERY_FIELDS)])
_DEFAULT_PREFS: dict[str, Any] = {"default": "always", "always": [], "never": []}


def archivable(stanza: Element) -> bool:
    """XEP-0313 §7.1 with the XEP-0334 hints (see the module docstring)."""
    if stanza.attrs.get("type", "normal") not in ("chat", "normal"):
        return False
    body = False
    for child in stanza.elements():
        if child.ns == HINTS_NS:
            name = child.name
            if name in ("no-store", "no-permanent-store"):
                return False
            if name == "store":
                body = True
        elif child.name == "body" and child.ns == stanza.ns:
            body = True
    return body


def depth(el: Element) -> int:
    """Levels of elements in ``el`` (1 for an element without child elements)."""
    deepest = 0
    stack = [(el, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in node.elements())
    return deepest


def stamp(when: float) -> str:
    """A XEP-0082 UTC timestamp with microseconds (stable order within a second)."""
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_stamp(text: str) -> float:
    """A XEP-0082 date-time as a POSIX time; ``bad-request`` if it is not one."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise StanzaError("bad-request", f"not a XEP-0082 date-time: {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()



def matches(jids: list[str], peer: JID) -> bool:
    """A prefs list entry covers ``peer``: its full JID, bare JID or domain."""
    return bool(jids) and (peer.full in jids or str(peer.bare) in jids or peer.domain in jids)


class Archive(Module):
    """Archives messages, answers MAM queries and preferences; provides ``mam``."""

    name = "mam"
    xeps = ("XEP-0313", "XEP-0359", "XEP-0059")
    depends = ("message",)
    soft_depends = ("roster",)
    # With workers: appends from every process go into one archive (SQLite's writer lock,
    # BEGIN IMMEDIATE); the cached preferences follow ModuleAPI.changed.
    workers_safe = True
    options = {
        "default": Option(str, "always", "archive by default: always, never or roster",
                          choices=("always", "never", "roster")),
        "max_page": Option(int, 250, "most results one query returns (RSM max is capped)",
                           min=1),
        "default_page": Option(int, 50, "results per query without RSM max", min=1),
        "retention_days": Option(int, 0, "delete items older than this (0: keep forever)",
                                 min=0),
    }

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        self.router = api.router
        self.hosts = api.hosts
        self.archive = api.open_store("archive")
        api.gauge("archive_messages", "messages in the message archives (MAM)",
                  self.archived_messages)
        api.gauge("archive_accounts", "accounts with archived messages", self.archive_owners)
        self.prefs_store = api.open_store("keyvalue")
        self.prefs: dict[str, dict[str, Any]] = {}  # owner -> prefs, bounded (see _remember)
        # The latest archive write under way: writes complete in the order they start
        # (one writer, batches in order), so waiting for it waits for all of them.
        self.last_write: asyncio.Future | None = None
        self._encoded: tuple[Any, Any, Any, bytes] = (None, None, None, b"")
        self._checked: tuple[Any, Any, Any, bool] = (None, None, None, False)
        self.clock: Callable[[], float] = time.time
        self._sent: tuple[Element | None, Element | None] = (None, None)
        self.max_wrapped_depth = api.limits.max_depth - RESULT_WRAPPING
        api.hook("config-reloaded", self.reloaded)
        for feature in (MAM_NS, MAM_EXTENDED_NS, SID_NS):
            api.add_feature(feature, account=True)
        api.iq_handler("get", MAM_NS, "query", self.query_form, to="bare")
        api.iq_handler("set", MAM_NS, "query", self.query, to="bare")
        api.iq_handler("get", MAM_NS, "prefs", self.get_prefs, to="bare")
        api.iq_handler("set", MAM_NS, "prefs", self.set_prefs, to="bare")
        # After blocking (100), which may refuse a message; before carbons (40), whose
        # copies carry the stanza-id added here.
        api.hook("message/outbound", self.outbound, priority=50)
        api.hook("message/full", self.inbound, priority=50)
        api.hook("message/bare", self.inbound, priority=50)
        api.hook("resource-bound", self.bound)
        api.provide("mam", self)
        api.on_changed(self.prefs_changed)
        if api.options["retention_days"]:
            api.every(24 * 3600, self._daily_expire)

    def reloaded(self, _old: Any, new: Any) -> None:
        """A reload may change ``limits.max_depth``."""
        self.max_wrapped_depth = new.limits.max_depth - RESULT_WRAPPING

    # -- what gets archived -------------------------------------------------------------------

    async def archived_messages(self) -> int:
        return (await self.archive.size())[1]

    async def archive_owners(self) -> int:
        return (await self.archive.size())[0]

    def strip_ids(self, stanza: Element) -> None:
        """Remove ``stanza-id`` elements claiming to be ours (XEP-0359 §3.1)."""
        raw = stanza._raw_inner
        if raw is not None and raw.find(b"stanza-id") < 0:  # a child's name is in its bytes
            return
        forged = None
        for child in stanza.elements():
            if child.name == "stanza-id" and child.ns == SID_NS:
                by = jid_or_none(child.get("by"))
                if by is None or by.domain in self.hosts:
                    forged = [*(forged or ()), child]
        for child in forged or ():
            stanza.remove(child)

    def too_deep(self, data: bytes, stanza: Element) -> bool:
        limit = self.max_wrapped_depth
        return len(data) >= _MIN_BYTES_PER_LEVEL * limit and depth(stanza) > limit

    def decide(self, prefs: dict[str, Any], owner: str, peer: JID | None) -> bool | Any:
        """Whether the owner's prefs archive a message with ``peer`` (an awaitable when
        the roster must be read)."""
        if peer is not None:
            if matches(prefs["never"], peer):
                return False
            if matches(prefs["always"], peer):
                return True
        default = prefs["default"]
        if default == "roster":
            return self._in_roster(owner, peer)
        return default == "always"

    async def _in_roster(self, owner: str, peer: JID | None) -> bool:
        if peer is None:
            return False
        rosters = self.api.service("roster")
        if rosters is None:  # no roster module: nobody is in the roster
            return False
        item = (await rosters.get(JID(owner))).get(str(peer.bare))
        return item is not None and item.listed

    def store(self, stanza: Element, owner: str, peer: JID | None,
              session: Any = None) -> Element | None:
        """Start archiving ``stanza`` for ``owner``; returns the ``stanza-id`` element, or
        None (refused: the caller answers with an error)."""
        data = self._encode(stanza)
        if data is None:
            return None
        item_id = new_item_id()
        # One future for the whole batch (SQLite): the sender's and the recipient's copies
        # and every other message of this loop iteration share it and its callback.
        write = self.archive.start_append_shared(
            owner, data, stamp=self.clock(), id=item_id,
            with_jid=str(peer.bare) if peer is not None else "",
        )
        if write is not self.last_write:
            self.last_write = write
            write.add_done_callback(self._written)
        if session is not None:
            session.track(write)
        return Element("stanza-id", SID_NS, {"by": owner, "id": item_id}, [])

    def _encode(self, stanza: Element) -> bytes | None:
        """The stored form of ``stanza``, None if too deep.  A chat message is stored twice,
        in the sender's and the recipient's archives, usually unchanged in between: the
        bytes are reused while the stanza keeps its tokenizer content (``_raw_inner``, which
        any change of its children drops; the tokenizer-built children are what
        :meth:`Element.to_bytes` writes then) and its attributes."""
        cached, raw, attrs, data = self._encoded
        if cached is stanza and raw is not None and stanza._raw_inner is raw \
                and stanza.attrs == attrs:
            return data
        data = encode_stanza(stanza)
        if self.too_deep(data, stanza):
            self._encoded = (None, None, None, b"")
            return None
        self._encoded = (stanza, stanza._raw_inner, dict(stanza.attrs), data)
        return data

    def _written(self, write: asyncio.Future) -> None:
        if self.last_write is write:
            self.last_write = None
        if write.cancelled():
            return
        if write.exception() is not None:
            self.api.log.error("archive write failed", exc_info=write.exception())
            return
        for owner, item_id, error in write.result():
            self.api.log.error("archive write of %s for %s failed", item_id, owner,
                               exc_info=error)

    # -- hooks ---------------------------------------------------------------------------------

    def _archivable(self, stanza: Element) -> bool:
        """:func:`archivable`, forged ids removed first; remembered for the stanza while its
        content is unchanged (the sender's and the recipient's hooks see the same one)."""
        checked, raw, kind, verdict = self._checked
        if checked is stanza and raw is not None and stanza._raw_inner is raw \
                and stanza.attrs.get("type") == kind:
            return verdict
        self.strip_ids(stanza)
        verdict = archivable(stanza)
        self._checked = (stanza, stanza._raw_inner, stanza.attrs.get("type"), verdict)
        return verdict

    def outbound(self, stanza: Element, session: Any) -> Any:
        self._sent = (None, None)
        if not self._archivable(stanza):
            return None
        owner = str(session.bare)
        peer = jid_or_none(stanza.get("to")) or session.bare
        prefs = self.prefs.get(owner)
        verdict = self.decide(prefs, owner, peer) if prefs is not None else None
        if verdict is True:
            return self._archive_sent(stanza, owner, peer, session)
        if verdict is False:
            return None
        return self._outbound_later(stanza, owner, peer, session, verdict)

    async def _outbound_later(self, stanza, owner, peer, session, verdict) -> bool:
        if verdict is None:
            verdict = self.decide(await self.load_prefs(owner), owner, peer)
        if verdict is not True and verdict is not False:
            verdict = await verdict
        return bool(verdict) and bool(self._archive_sent(stanza, owner, peer, session))

    def _archive_sent(self, stanza: Element, owner: str, peer: JID, session: Any) -> bool | None:
        sid = self.store(stanza, owner, peer, session)
        if sid is None:
            session.send(error_reply(stanza, "policy-violation",
                                     text="nested too deeply to be archived"))
            return True
        self._sent = (stanza, sid)
        return None

    def sent_stanza_id(self, stanza: Element) -> Element | None:
        """The ``stanza-id`` the sender's archive gave ``stanza``, while its
        ``message/outbound`` handlers run (carbons put it into the sent copies)."""
        sent, sid = self._sent
        return sid if sent is stanza else None

    def inbound(self, stanza: Element, origin: Any, *target: Any) -> Any:
        if not self._archivable(stanza):
            return None
        if target:
            bare = target[0].bare
        else:
            bare = jid_or_none(stanza.get("to"))
            if bare is None:
                bare = getattr(origin, "bare", None)
                if bare is None:
                    return None
            bare = bare.bare
        owner = str(bare)
        peer = jid_or_none(stanza.get("from"))
        prefs = self.prefs.get(owner)
        online = target or self.router.sessions.count(bare)
        verdict = self.decide(prefs, owner, peer) if prefs is not None and online else None
        if verdict is True:
            return self._archive_received(stanza, owner, peer)
        if verdict is False:
            return None
        return self._inbound_later(stanza, owner, peer, verdict, bool(online))

    async def _inbound_later(self, stanza, owner, peer, verdict, online) -> bool:
        if not online:  # a message for an account with no session: does it exist?
            jid = JID(owner)
            if not await self.api.storage.account_exists(jid.localpart or "", jid.domain):
                return False
        if verdict is None:
            verdict = self.decide(await self.load_prefs(owner), owner, peer)
        if verdict is not True and verdict is not False:
            verdict = await verdict
        return bool(verdict) and bool(self._archive_received(stanza, owner, peer))

    def _archive_received(self, stanza: Element, owner: str, peer: JID | None) -> bool | None:
        sid = self.store(stanza, owner, peer)
        if sid is None:
            self.router.bounce(stanza, "policy-violation", "nested too deeply to be archived")
            return True
        attrs = sid.attrs
        stanza.append_forwardable(sid, f'<stanza-id xmlns="{SID_NS}" by="{escape_attr(owner)}"'
                                        f' id="{escape_attr(attrs["id"])}"/>'.encode())
        return None

    def bound(self, session: Any) -> None:
        owner = str(session.bare)
        if owner not in self.prefs:
            self.api.spawn(self.load_prefs(owner))

    # -- preferences ---------------------------------------------------------------------------

    async def load_prefs(self, owner: str) -> dict[str, Any]:
        prefs = self.prefs.get(owner)
        if prefs is None:
            stored = await self.prefs_store.get(owner, PREFS_KEY)
            prefs = stored or {**_DEFAULT_PREFS, "default": self.api.options["default"]}
            self._remember(owner, prefs)
        return prefs

    def _remember(self, owner: str, prefs: dict[str, Any]) -> None:
        cache = self.prefs
        cache.pop(owner, None)
        if len(cache) >= _PREFS_CACHE_SIZE:
            del cache[next(iter(cache))]  # the least recently stored
        cache[owner] = prefs

    async def get_prefs(self, iq: Element, origin: Any, payload: Element) -> Element:
        owner = str(own_account(iq, origin))
        return self._prefs_reply(iq, await self.load_prefs(owner))

    async def set_prefs(self, iq: Element, origin: Any, payload: Element) -> Element:
        owner = str(own_account(iq, origin))
        default = payload.get("default")
        if default not in ("always", "never", "roster"):
            raise StanzaError("bad-request", "default must be always, never or roster")
        prefs: dict[str, Any] = {"default": default}
        for kind in ("always", "never"):
            jids: list[str] = []
            for el in payload.findall(kind, MAM_NS):
                for item in el.findall("jid", MAM_NS):
                    jid = jid_or_none(item.text.strip())
                    if jid is None:
                        raise StanzaError("jid-malformed", f"bad JID {item.text!r}")
                    jids.append(str(jid))
            prefs[kind] = sorted(set(jids))
        await self.prefs_store.set(owner, PREFS_KEY, prefs)
        self._remember(owner, prefs)
        # The recipient's preferences decide on the sender's worker: in force everywhere
        # before the client hears the result.
        await self.api.changed(owner, PREFS_KEY)
        return self._prefs_reply(iq, prefs)

    def prefs_changed(self, owner: str, key: str) -> None:
        """Another worker stored ``owner``'s preferences: forget the cached copy."""
        self.prefs.pop(owner, None)

    @staticmethod
    def _prefs_reply(iq: Element, prefs: dict[str, Any]) -> Element:
        out = reply(iq)
        el = out.subelement("prefs", MAM_NS, {"default": prefs["default"]})
        for kind in ("always", "never"):
            lst = el.subelement(kind, MAM_NS)
            for jid in prefs[kind]:
                lst.subelement("jid", MAM_NS, text=jid)
        return out

    # -- queries -------------------------------------------------------------------------------

    def query_form(self, iq: Element, origin: Any, payload: Element) -> Element:
        own_account(iq, origin)
        out = reply(iq)
        out.subelement("query", MAM_NS).append(_forms.form(MAM_NS, QUERY_FIELDS))
        return out

    async def query(self, iq: Element, origin: Any, payload: Element) -> Element:
        owner = str(own_account(iq, origin))
        queryid = payload.get("queryid")
        fields = _forms.submitted(payload.find("x", _forms.DATA_NS))
        unknown = set(fields) - _FIELD_NAMES
        if unknown:
            raise StanzaError("bad-request", f"unsupported field {sorted(unknown)[0]!r}")
        form_type = _forms.single(fields, "FORM_TYPE")
        if fields and form_type != MAM_NS:
            raise StanzaError("bad-request", f"FORM_TYPE must be {MAM_NS}")
        filters: dict[str, Any] = {}
        resource_filter: JID | None = None
        with_text = _forms.single(fields, "with")
        if with_text is not None:
            peer = jid_or_none(with_text)
            if peer is None:
                raise StanzaError("jid-malformed", f"bad 'with': {with_text!r}")
            filters["with_jid"] = str(peer.bare)
            if peer.resource is not None:
                resource_filter = peer
        for var, key in (("start", "start"), ("end", "end")):
            text = _forms.single(fields, var)
            if text is not None:
                filters[key] = parse_stamp(text)
        if fields.get("ids"):
            filters["ids"] = [i for i in fields["ids"] if i]
        rsm = _rsm.parse(payload)
        if rsm.index is not None:
            raise StanzaError("feature-not-implemented", "RSM <index/> is not supported")
        want = min(rsm.max if rsm.max is not None else self.api.options["default_page"],
                   self.api.options["max_page"])
        if self.last_write is not None:  # a query sees every message delivered before it
            await asyncio.wait([self.last_write])
        try:
            after = await self._anchor(owner, [_forms.single(fields, "after-id"), rsm.after],
                                       latest=True)
            before = await self._anchor(owner, [_forms.single(fields, "before-id"),
                                                rsm.before], latest=False)
            reverse = rsm.before is not None
            page, complete = await self._page(owner, filters, after, before, reverse, want,
                                              resource_filter)
            count = None
            if resource_filter is None:
                count = await self.archive.count(owner, **filters)
        except ItemNotFound as exc:
            raise StanzaError("item-not-found", str(exc) or "no such archive id") from None
        to = origin.jid.full
        for item in page:
            origin.send(self._result(item, owner, to, queryid))
        out = reply(iq)
        fin = out.subelement("fin", MAM_NS, {"complete": "true" if complete else "false"})
        if queryid is not None:
            fin.attrs["queryid"] = queryid
        fin.append(_rsm.result(page[0].id if page else None, page[-1].id if page else None,
                               count))
        return out

    async def _anchor(self, owner: str, ids: list[str | None], latest: bool) -> str | None:
        """Of the given ids, the one that restricts more (the later for ``after``);
        ItemNotFound for an unknown one."""
        ids = [i for i in ids if i]
        if len(ids) < 2:
            return ids[0] if ids else None
        items = []
        for item_id in ids:
            item = await self.archive.get(owner, item_id)
            if item is None:
                raise ItemNotFound(item_id)
            items.append(item)
        pick = max if latest else min
        return pick(items, key=lambda i: i.seq).id

    async def _page(self, owner, filters, after, before, reverse, want, resource_filter):
        """Up to ``want`` items in chronological order, and whether the page reaches the
        end of the result set in the paging direction."""
        query = self.archive.query
        if resource_filter is None:
            items = await query(owner, **filters, after_id=after, before_id=before,
                                limit=want + 1, reverse=reverse)
            complete = len(items) <= want
            items = items[:want]
        else:  # a full JID: filter the bare JID's items by the stored message's peer
            items, complete, chunk = [], True, max(want + 1, 50)
            while True:
                batch = await query(owner, **filters, after_id=after, before_id=before,
                                    limit=chunk, reverse=reverse)
                for item in batch:
                    if self._with_full(item, resource_filter):
                        if len(items) == want:
                            complete = False
                            break
                        items.append(item)
                if not complete or len(batch) < chunk:
                    break
                if reverse:
                    before = batch[-1].id
                else:
                    after = batch[-1].id
        if reverse:
            items.reverse()
        return items, complete

    def _with_full(self, item: ArchiveItem, peer: JID) -> bool:
        try:
            msg = self.decode(item.data)
        except ValueError:
            return False
        return peer in (jid_or_none(msg.get("from")), jid_or_none(msg.get("to")))

    def decode(self, data: bytes) -> Element:
        """A stored message (the tokenizer's limits leave room for the result wrapping)."""
        header = (b"<stream:stream xmlns='jabber:client' "
                  b"xmlns:stream='http://etherx.jabber.org/streams'>")
        tokenizer = Tokenizer(len(data) + len(header) + 1, self.api.limits.max_depth + 1)
        elements = [e for e in tokenizer.feed(header + data) if isinstance(e, Element)]
        if len(elements) != 1:
            raise ValueError("a stored message does not parse to one element")
        return elements[0]

    def _result(self, item: ArchiveItem, owner: str, to: str, queryid: str | None) -> Element:
        try:
            msg = self.decode(item.data)
        except Exception:  # noqa: BLE001 - one damaged row must not end the query
            self.api.log.warning("unreadable archive item %s of %s", item.id, owner)
            msg = Element("message", CLIENT_NS, {}, [])
        result = Element("result", MAM_NS, {"id": item.id}, [])
        if queryid is not None:
            result.attrs["queryid"] = queryid
        forwarded = result.subelement("forwarded", FORWARD_NS)
        forwarded.subelement("delay", DELAY_NS, {"stamp": stamp(item.stamp)})
        forwarded.append(msg)
        return Element("message", CLIENT_NS, {"from": owner, "to": to}, [result])

    # -- retention -----------------------------------------------------------------------------

    async def _daily_expire(self) -> None:
        """The daily job, run by one process of several (workers, cluster nodes): the one
        that owns it, as rooms are owned (nobody while a cluster node has not joined)."""
        owner = self.api.owner_worker("mam:retention")
        if owner is not None and owner == self.api.peer:
            await self.expire()

    async def expire(self, now: float | None = None) -> int:
        """Delete items older than ``retention_days`` (the daily job); returns how many."""
        days = self.api.options["retention_days"]
        if not days:
            return 0
        cutoff = (self.clock() if now is None else now) - days * 24 * 3600
        deleted = await self.archive.delete_before(cutoff)
        if deleted:
            self.api.log.info("retention: deleted %d archived messages", deleted)
        return deleted
