"""Stanza routing (RFC 6120 §10, RFC 6121 §8.5) and the table of bound sessions.

The router reads only the envelope (``to``, ``type``) to decide where a stanza goes, then
either delivers it to a local session or fires the event a module handles.  Sessions are
behind :class:`SessionTable` so that a clustered table can replace it later.

The delivery policy for messages to a bare JID (RFC 6121 §8.5.2: which resources, or
offline storage) is not here: the router fires ``message/bare`` and the ``message`` module
decides, as Prosody's ``mod_message`` does.  A stanza to a full JID that has a session is
delivered here (the hot path); a ``chat``/``normal`` message to an unavailable full JID is
handled as if sent to the bare JID, ``groupchat`` to one is answered with
``service-unavailable``, ``headline`` and ``error`` are dropped.  IQs to the server or to a
bare JID go to the payload handler a module registered, else ``service-unavailable``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable

from xmppd.core.hooks import Hooks
from xmppd.core.session import Session
from xmppd.jid import JID, JIDError
from xmppd.xml.element import Element
from xmppd.xml.stanza import StanzaError, error_reply, iq_payload

log = logging.getLogger(__name__)


class SessionTable:
    """Bound sessions by full JID, and by bare JID (the resources of an account, in bind
    order)."""

    def __init__(self, quiet: dict[JID, int] | None = None) -> None:
        #: the modules' quiet marks by account (Hooks.quiet): dropped with the account's
        #: last session, so that a mark never outlives what it was declared about
        self._quiet = {} if quiet is None else quiet
        # Per account its one session, or a tuple of its sessions when it has several;
        # replaced on bind and unbind (rare).  Not a dict: an account has a handful of
        # resources at most, and a one-entry dict costs four times a one-entry tuple; and
        # not a 1-tuple for the usual single resource: 64 bytes less per idle account.
        self._by_bare: dict[JID, Session | tuple[Session, ...]] = {}
        # The hot path (a stanza to a full JID) must not build a bare JID per lookup.
        self._by_full: dict[JID, Session] = {}

    def get(self, full: JID) -> Session | None:
        return self._by_full.get(full)

    def _of(self, bare: JID) -> tuple[Session, ...]:
        entry = self._by_bare.get(bare)
        if entry is None:
            return ()
        return entry if type(entry) is tuple else (entry,)  # type: ignore[return-value]

    def _set(self, bare: JID, sessions: tuple[Session, ...]) -> None:
        if len(sessions) > 1:
            self._by_bare[bare] = sessions
        elif sessions:
            self._by_bare[bare] = sessions[0]
        else:
            del self._by_bare[bare]
            self._quiet.pop(bare, None)  # the account's last session: its marks go too

    def resources(self, bare: JID) -> list[Session]:
        return list(self._of(bare))

    def count(self, bare: JID) -> int:
        entry = self._by_bare.get(bare)
        if entry is None:
            return 0
        return len(entry) if type(entry) is tuple else 1  # type: ignore[arg-type]

    def add(self, session: Session) -> Session | None:
        """Bind ``session``; returns the session it displaced (same full JID), if any."""
        jid, bare = session.jid, session.bare
        old = self._by_full.get(jid)
        current = self._of(bare)
        # Keyed by the session's own bare JID, not a fresh ``jid.bare``: one bare JID object
        # per idle session instead of two.
        if old is None:
            self._set(bare, (*current, session))
        else:  # the new session takes the old one's place
            self._set(bare, tuple(session if s is old else s for s in current))
        self._by_full[jid] = session
        return old

    def remove(self, session: Session) -> bool:
        jid = session.jid
        if self._by_full.get(jid) is not session:
            return False
        del self._by_full[jid]
        bare = session.bare
        self._set(bare, tuple(s for s in self._of(bare) if s is not session))
        return True

    def all(self) -> Iterable[Session]:
        for entry in list(self._by_bare.values()):
            if type(entry) is tuple:
                yield from entry
            else:
                yield entry  # type: ignore[misc]

    def __len__(self) -> int:
        return len(self._by_full)


class Router:
    """Decides where each stanza goes and delivers it."""

    def __init__(self, hooks: Hooks, hosts: Iterable[str]) -> None:
        self.hooks = hooks
        # One set for the server's lifetime, changed in place by a reload (set_hosts):
        # whoever keeps a reference to it (client policy, modules) sees the new domains.
        self.hosts: set[str] = set(hosts)
        self.sessions = SessionTable(hooks.quiet)
        # Outcomes by stanza name, read by xmppd.metrics at scrape time.  One defaultdict
        # increment per stanza is the whole cost on the hot path (a message to a full JID
        # counts once, as delivered): no lock, no label lookup, no total at the entry.
        #: deliveries to a local session (a broadcast counts each recipient), but for the
        #: messages that took the one-gate path: :meth:`deliveries` counts those too
        self.delivered: defaultdict[str, int] = defaultdict(int)
        #: stanzas a module took (presence, messages to a bare JID or the server, IQs the
        #: server answers...); what it then delivers is counted as delivered too
        self.handled: defaultdict[str, int] = defaultdict(int)
        #: stanzas handed to another server or a component (``route/remote`` took them)
        self.remote: defaultdict[str, int] = defaultdict(int)
        #: deliveries handed to another worker of this server (a session bound there), but
        #: for the messages that took the one-gate path: :meth:`forwards` counts those too
        self.forwarded: defaultdict[str, int] = defaultdict(int)
        #: stanzas answered with an error, and the errors by condition
        self.bounced: defaultdict[str, int] = defaultdict(int)
        self.stanza_errors: defaultdict[str, int] = defaultdict(int)

    def deliveries(self) -> dict[str, int]:
        """Deliveries to a local session by stanza name: :attr:`delivered` and the messages
        :meth:`route_quiet_message` delivered (counted once, as :attr:`Hooks.skipped_all`:
        one increment fewer on the hot path)."""
        table = dict(self.delivered)
        express = self.hooks.skipped_all
        if express:
            table["message"] = table.get("message", 0) + express
        return table

    def forwards(self) -> dict[str, int]:
        """Deliveries handed to another worker or node by stanza name: :attr:`forwarded`
        and the messages :meth:`route_quiet_message` handed over (counted once, as
        :attr:`Hooks.skipped_remote`)."""
        table = dict(self.forwarded)
        quiet = self.hooks.skipped_remote
        if quiet:
            table["message"] = table.get("message", 0) + quiet
        return table

    def set_hosts(self, domains: Iterable[str]) -> None:
        """Serve ``domains`` from now on (a live reload added or removed virtual hosts)."""
        new = set(domains)
        self.hosts.difference_update(self.hosts - new)
        self.hosts.update(new)

    def is_local(self, domain: str) -> bool:
        return domain in self.hosts

    # -- entry points ---------------------------------------------------------------------

    def route(self, stanza: Element, origin: Session | None = None) -> Awaitable | None:
        """Route a stanza whose ``from`` is already stamped; may return an awaitable."""
        to = stanza.attrs.get("to")
        try:
            target = JID(to) if to is not None else None
        except JIDError as exc:
            self.bounce(stanza, "jid-malformed", str(exc))
            return None
        return self._route_to(stanza, origin, target)

    def _route_to(
        self, stanza: Element, origin: Session | None, target: JID | None
    ) -> Awaitable | None:
        if target is None:
            return self._to_own_account(stanza, origin)
        if target.domain not in self.hosts:
            return self._unless_handled(
                self.hooks.fire_maybe_async("route/remote", stanza, origin),
                lambda: self.bounce(stanza, "remote-server-not-found"),
                stanza, self.remote,
            )
        if target.localpart is None:
            return self._to_host(stanza, origin, target)
        if target.resource is not None:
            return self._to_full(stanza, origin, target)
        return self._to_bare(stanza, origin, target)

    def route_quiet_message(self, stanza: Element, origin: Session, need: int) -> Awaitable | None:
        """:meth:`route` for a message from ``origin``'s client that carries none of the
        payloads of :attr:`Hooks.message_gate` (its ``message/outbound`` chain was
        skipped); ``need``: the recipient's quiet bits in that gate.  To a local full JID
        whose account is quiet for them, it is delivered here with no other call (the
        hot path), counted once as a skip of all three chains (:attr:`Hooks.skipped_all`);
        to a session of another worker whose account is quiet for ``message/full``
        (:attr:`Hooks.message_full_need`), handed to its link at once; anything else takes
        the general way, its outbound chain counted as skipped."""
        hooks = self.hooks
        to = stanza.attrs.get("to")
        try:
            target = JID(to) if to is not None else None
        except JIDError as exc:
            hooks.skipped["message/outbound"] += 1
            self.bounce(stanza, "jid-malformed", str(exc))
            return None
        if target is not None:
            # A session's JID is a full JID with a localpart: only such a target finds
            # one (and no JID property, which slices a new string, is read to know it)
            session = self.sessions._by_full.get(target)
            if session is not None and target.domain in self.hosts:
                if not session.remote:
                    if not need or hooks.quiet.get(session.bare, 0) & need == need:
                        hooks.skipped_all += 1  # also its count as delivered (deliveries())
                        session.transport.send(stanza)
                        return None
                else:
                    # A session on another worker or node: only message/full runs here
                    # (stanza/inbound runs there); skipped as _to_full would, and handed
                    # to the link as deliver() does
                    need = hooks.message_full_need
                    if not need or hooks.quiet.get(session.bare, 0) & need == need:
                        hooks.skipped_remote += 1  # also its count as forwarded (forwards())
                        session.transport.send(stanza)
                        return None
        hooks.skipped["message/outbound"] += 1
        return self._route_to(stanza, origin, target)

    def _to_own_account(self, stanza: Element, origin: Session | None) -> Awaitable | None:
        if stanza.name == "presence":
            self.handled["presence"] += 1
            return self._maybe(self.hooks.fire_maybe_async("presence/host", stanza, origin))
        if origin is None:
            return None
        return self._to_bare(stanza, origin, origin.jid.bare, addressed=False)

    def _to_host(self, stanza: Element, origin: Session | None, target: JID) -> Awaitable | None:
        name = stanza.name
        if name == "iq":
            return self._iq(stanza, origin, "host")
        if name == "presence":
            self.handled[name] += 1
            return self._maybe(self.hooks.fire_maybe_async("presence/host", stanza, origin))
        return self._unless_handled(
            self.hooks.fire_maybe_async("message/host", stanza, origin),
            lambda: self.bounce(stanza, "service-unavailable"),
            stanza, self.handled,
        )

    def _to_full(self, stanza: Element, origin: Session | None, target: JID) -> Awaitable | None:
        session = self.sessions.get(target)
        name = stanza.name
        if name == "message":
            if session is not None:
                hooks = self.hooks
                if hooks.idle("message/full", stanza, session.bare):
                    self.deliver(session, stanza)  # no module can act on it: skip them
                    return None
                result = hooks.fire_maybe_async("message/full", stanza, origin, session)
                if result is False:  # the hot path: no hook took it, deliver (no closure)
                    self.deliver(session, stanza)
                    return None
                return self._unless_handled(
                    result, lambda: self.deliver(session, stanza), stanza, self.handled
                )
            mtype = stanza.attrs.get("type", "normal")
            if mtype in ("chat", "normal"):
                return self._to_bare(stanza, origin, target.bare)
            if mtype == "groupchat":
                self.bounce(stanza, "service-unavailable")
            return None
        if name == "presence":
            self.handled[name] += 1
            return self._maybe(self.hooks.fire_maybe_async("presence/full", stanza, origin, session))
        if session is not None and stanza.attrs.get("type") in ("get", "set", "result", "error"):
            self.deliver(session, stanza)
            return None
        if stanza.attrs.get("type") in ("get", "set"):
            self.bounce(stanza, "service-unavailable")
        return None

    def _to_bare(
        self, stanza: Element, origin: Session | None, bare: JID, addressed: bool = True
    ) -> Awaitable | None:
        name = stanza.name
        if name == "iq":
            return self._iq(stanza, origin, "bare", bare if addressed else None)
        if name == "presence":
            self.handled[name] += 1
            return self._maybe(self.hooks.fire_maybe_async("presence/bare", stanza, origin))
        return self._unless_handled(
            self.hooks.fire_maybe_async("message/bare", stanza, origin),
            lambda: self.bounce(stanza, "service-unavailable"),
            stanza, self.handled,
        )

    # -- IQs -------------------------------------------------------------------------------

    def _iq(
        self, stanza: Element, origin: Session | None, to: str, bare: JID | None = None
    ) -> Awaitable | None:
        itype = stanza.attrs.get("type")
        if itype not in ("get", "set"):
            # results and errors to the server or a bare JID end here, unless a module
            # waits for them (a disco#info query it sent: entity capabilities)
            if itype in ("result", "error"):
                self.handled["iq"] += 1
                return self._maybe(self.hooks.fire_maybe_async("iq/response", stanza, origin))
            return None
        payload = iq_payload(stanza)
        if payload is None:
            self.bounce(stanza, "bad-request")
            return None
        # An IQ to one's own bare JID (or with no 'to') is handled by the server on the
        # account's behalf (roster, blocking, ...); to another account's bare JID, too
        # (e.g. vCard, PEP), with the handler checking who may ask.
        handler = self.hooks.find_iq_handler(to, itype, payload.ns, payload.name)
        if handler is None:
            result = self.hooks.fire_maybe_async("iq/bare", stanza, origin) if to == "bare" else False
            return self._unless_handled(
                result, lambda: self.bounce(stanza, "service-unavailable"), stanza, self.handled
            )
        self.handled["iq"] += 1
        return self._run_iq(handler, stanza, origin, payload)

    def _run_iq(self, handler, stanza, origin, payload) -> Awaitable | None:
        try:
            result = handler(stanza, origin, payload)
        except StanzaError as exc:
            self.bounce(stanza, exc.condition, exc.text, exc.type)
            return None
        if result is None:
            return None
        if isinstance(result, Element):
            self.route_from_server(result)
            return None
        return self._await_iq(result, stanza)

    async def _await_iq(self, pending: Awaitable, stanza: Element) -> None:
        try:
            result = await pending
        except StanzaError as exc:
            self.bounce(stanza, exc.condition, exc.text, exc.type)
            return
        if result is not None:
            self.route_from_server(result)

    # -- delivery helpers ---------------------------------------------------------------------

    def deliver(self, session: Session, stanza: Element) -> None:
        if session.remote:  # its worker delivers it (and runs stanza/inbound there)
            self.forwarded[stanza.name] += 1
            session.transport.send(stanza)
            return
        self.delivered[stanza.name] += 1
        hooks = self.hooks
        if hooks.idle("stanza/inbound", stanza, session.bare) \
                or hooks.fire_sync("stanza/inbound", stanza, session) is False:
            session.transport.send(stanza)

    def bounce(
        self, stanza: Element, condition: str, text: str | None = None, type: str | None = None
    ) -> None:
        """Answer ``stanza`` with an error, unless it is itself an error (no loops)."""
        if stanza.attrs.get("type") == "error" or "from" not in stanza.attrs:
            return
        self.bounced[stanza.name] += 1
        self.stanza_errors[condition] += 1
        self.route_from_server(error_reply(stanza, condition, type, text))

    def route_from_server(self, stanza: Element) -> None:
        """Route a stanza the server generated (its ``from`` set by the caller)."""
        result = self.route(stanza, None)
        if result is not None:
            asyncio.ensure_future(result)

    def _unless_handled(
        self, result: bool | Awaitable[bool], default: Callable[[], Awaitable | None],
        stanza: Element, taken: defaultdict[str, int],
    ) -> Awaitable | None:
        """Run ``default`` (deliver, bounce...) unless a hook handled the stanza (then it
        is counted in ``taken``), also when a hook only decides asynchronously (e.g. after
        a storage lookup)."""
        if result is False:
            return default()
        if result is True:
            taken[stanza.name] += 1
            return None
        return self._default_after(result, default, stanza, taken)

    @staticmethod
    async def _default_after(
        pending: Awaitable[bool], default: Callable[[], Awaitable | None],
        stanza: Element, taken: defaultdict[str, int],
    ) -> None:
        if await pending:
            taken[stanza.name] += 1
            return
        follow = default()
        if follow is not None:
            await follow

    @staticmethod
    def _maybe(result: bool | Awaitable[bool]) -> Awaitable | None:
        return None if result is True or result is False else result
