"""XEP-0160: offline messages, with XEP-0203 delay stamps.

Storing: a ``chat`` or ``normal`` message with content (a body or any payload that is not
just a XEP-0085 chat state or a XEP-0334 hint) to an existing account with no available
resource is appended to the account's store: this module's archive (owner = the bare
JID; items in arrival order, the payload the serialized stanza, ``stamp`` its arrival).  The ``message/offline`` handler returns only
after the storage *commit* (the SQLite backend groups concurrent writes into one
transaction), and the sender's stream does not read its next stanza before that, so any
answer the sender gets after the message (a ping's pong, later a XEP-0198 ack) means the
message is durable.  Pure chat states and ``<no-store/>`` messages are dropped silently;
past ``limits.max_offline_messages`` the sender gets ``service-unavailable``; for a
non-existent account the router bounces ``service-unavailable``.

Delivery: when a session sends available presence with non-negative priority (and had not
got the store yet), the stored messages are sent to that session in order, each with
``<delay from='domain' stamp='...'/>``, and deleted *after they have been written to the
session's transport* (the output buffer flushed into the socket).  A session that closed
before that keeps them stored, so delivery is at-least-once: a crash between the write and
the delete re-delivers, never loses.  With stream management on the session
(``sm`` service, ``when_acked``), the delete waits for the client's acknowledgement
instead: messages it never acknowledged (connection lost, session expired) stay stored and
are delivered again at the next login; meanwhile other sessions of the account do not get
them.  Without stream management, written to the socket is the best one knows.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from xmppd.core.module import Module
from xmppd.core.moduleapi import ModuleAPI
from xmppd.jid import JID, JIDError
from xmppd.xml.element import Element
from xmppd.xml.stanza import decode_stanza, encode_stanza

DELAY_NS = "urn:xmpp:delay"
CHATSTATES_NS = "http://jabber.org/protocol/chatstates"
HINTS_NS = "urn:xmpp:hints"
MSGOFFLINE_NS = "msgoffline"
AVAILABLE_EVENT = "presence/available"  # declared by the presence module


def storable(message: Element) -> bool | None:
    """True to store, False to drop silently, None to refuse (bounce)."""
    if message.get("type", "normal") not in ("chat", "normal"):
        return None
    content = False
    for child in message.elements():
        if child.ns == HINTS_NS:
            if child.name == "no-store":
                return False
            continue
        if child.ns == CHATSTATES_NS or (child.name == "thread" and child.ns == message.ns):
            continue
        content = True
    return content


def stamp(when: float) -> str:
    """A XEP-0082 UTC timestamp with milliseconds."""
    dt = datetime.fromtimestamp(when, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _handed_over(session: Any) -> bool:
    """Write what the session has buffered; True when the messages reached its transport."""
    flush = getattr(session, "flush", None)
    if flush is not None:
        flush()
    return not getattr(session, "closed", False)


class Offline(Module):
    """Stores messages nobody can take (``message/offline``); delivers them when a
    session becomes available (``presence/available``)."""

    name = "offline"
    workers_safe = True
    xeps = ("XEP-0160", "XEP-0203")
    depends = ("message", "presence")

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        self.router = api.router
        self.storage = api.storage
        self.archive = api.open_store("archive")
        api.gauge("offline_messages", "offline messages stored", self.stored_messages)
        api.gauge("offline_accounts", "accounts with offline messages", self.stored_accounts)
        # One lock per account while deliveries to it run (with how many hold or wait for
        # it): dropped as soon as the last one ends, so idle sessions keep none.
        self.locks: dict[JID, tuple[asyncio.Lock, list[int]]] = {}
        # Full JID -> the session that got the store (here rather than in each session's
        # state: a few bytes per idle session, not an object).  A session displaced by
        # another with the same full JID gets no session-closed: its entry goes when the
        # JID's next session becomes available or closes.
        self.delivered: dict[JID, Any] = {}
        # Owner -> ids delivered to a stream-management session, not acknowledged yet:
        # kept stored, but not delivered to another session meanwhile.
        self.inflight: dict[str, set[str]] = {}
        api.hook("message/offline", self.store)
        api.hook(AVAILABLE_EVENT, self.on_available)
        api.hook("session-closed", self.on_closed, priority=-100)
        api.add_feature(MSGOFFLINE_NS)

    async def store(self, stanza: Element, origin: Any) -> bool:
        api, storage = self.api, self.storage
        verdict = storable(stanza)
        if verdict is None:
            return False
        try:
            target = JID(stanza.get("to", "")).bare
        except JIDError:
            return False
        username, domain = target.localpart or "", target.domain
        if not await storage.account_exists(username, domain):
            return False
        if verdict is False:
            return True
        limit = api.limits.max_offline_messages
        # (an archive limit of 0 means "none"; a configured 0 means "store nothing")
        if limit <= 0 or await self.archive.append(
            str(target), encode_stanza(stanza), stamp=time.time(), limit=limit
        ) is None:
            api.count_limit("max_offline_messages")
            api.log.info("limit max_offline_messages (%d) reached for %s", limit, target)
            return False
        push = api.service("push")
        if push is not None:  # stored (committed): the woken phone will find it
            push.offline(target, stanza)
        # A session may have become available while we were writing; it already fetched
        # the store, so hand it this message now.
        presence = api.service("presence")
        for session in self.router.sessions.resources(target):
            if self.delivered.get(session.jid) is session and presence.available(session) \
                    and presence.priority(session) >= 0:
                api.spawn(self.deliver(session), eager=False)
                break
        return True

    async def deliver(self, session: Any) -> None:
        bare = session.jid.bare
        entry = self.locks.get(bare)
        # The common login has nothing stored: no lock for it.  (With none taken, nothing
        # is being delivered: this count is the one the locked delivery would read first.)
        if entry is None and not await self.archive.count(str(bare)):
            return
        entry = self.locks.get(bare)  # (another delivery may have begun meanwhile)
        if entry is None:
            entry = self.locks[bare] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                await self.deliver_locked(session, bare)
        finally:
            users[0] -= 1
            if not users[0]:
                del self.locks[bare]

    async def deliver_locked(self, session: Any, bare: JID) -> None:
        owner, domain = str(bare), bare.domain
        # The count is one row on the loop thread: the common login, with nothing stored,
        # costs no trip to the storage thread.
        if not await self.archive.count(owner) or session.closed:
            return
        stored = await self.archive.query(owner)
        inflight = self.inflight.get(owner)
        if inflight:  # sent to another session, waiting for its acknowledgement
            stored = [m for m in stored if m.id not in inflight]
        if session.closed or not stored:
            return
        sent: list[Element] = []
        sent_ids: list[str] = []
        unreadable: list[str] = []
        for item in stored:
            try:
                msg = decode_stanza(item.data)
            except Exception:  # one damaged row must not block the rest
                self.api.log.warning("unreadable offline message %s for %s", item.id, bare)
                unreadable.append(item.id)
                continue
            msg.subelement("delay", DELAY_NS, {"from": domain, "stamp": stamp(item.stamp)},
                           text="Offline Storage")
            self.router.deliver(session, msg)
            sent.append(msg)
            sent_ids.append(item.id)
        if not _handed_over(session):
            return
        sm = self.api.service("sm")
        acked = sm.when_acked(session, sent) if sm is not None and sent else None
        if acked is None:
            await self.archive.delete(owner, unreadable + sent_ids)
            return
        if unreadable:
            await self.archive.delete(owner, unreadable)
        self.inflight.setdefault(owner, set()).update(sent_ids)
        self.api.spawn(self._delete_when_acked(owner, bare, sent_ids, acked))

    async def _delete_when_acked(self, owner: str, bare: JID, ids: list[str],
                                 acked: asyncio.Future) -> None:
        """Stream management: delete what the client acknowledged; what it did not stays
        stored, for the next session that becomes available (or one that already is)."""
        done: list[str] = []
        try:
            flags = await acked
            done = [i for i, ok in zip(ids, flags, strict=True) if ok]
            if done:
                await self.archive.delete(owner, done)
        finally:
            inflight = self.inflight.get(owner)
            if inflight is not None:
                inflight.difference_update(ids)
                if not inflight:
                    del self.inflight[owner]
        if len(done) < len(ids):
            presence = self.api.service("presence")
            for session in self.router.sessions.resources(bare):
                if self.delivered.get(session.jid) is session and not session.closed \
                        and presence.available(session) and presence.priority(session) >= 0:
                    self.api.spawn(self.deliver(session), eager=False)
                    break

    async def on_available(self, session: Any, initial: bool) -> None:
        delivered = self.delivered
        got_store = delivered.get(session.jid) is session
        if self.api.service("presence").priority(session) < 0:
            if got_store:
                del delivered[session.jid]
            return
        if got_store:
            return
        delivered[session.jid] = session
        await self.deliver(session)

    async def stored_messages(self) -> int:
        return (await self.archive.size())[1]

    async def stored_accounts(self) -> int:
        return (await self.archive.size())[0]

    def on_closed(self, session: Any, abrupt: bool) -> None:
        if self.delivered.get(session.jid) is not self.router.sessions.get(session.jid):
            self.delivered.pop(session.jid, None)
