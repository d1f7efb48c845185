"""XEP-0280: message carbons (``urn:xmpp:carbons:2``).

A resource enables carbons with ``<iq type='set'><enable xmlns='urn:xmpp:carbons:2'/></iq>``
(to its own account: no ``to``, its bare JID, or the server) and disables them with
``<disable/>``; the flag lives in the session and ends with it.  Then:

- **received**: a message to the account that one resource got is copied to every other
  carbons-enabled resource, as ``<received><forwarded xmlns='urn:xmpp:forward:0'>`` from
  the account's bare JID.  To a full JID: the other resources; to the bare JID: the
  resources the ``message`` module did not deliver it to (``message/delivered``).
- **sent**: a message a resource sends is copied, wrapped in ``<sent/>``, to the account's
  other carbons-enabled resources.  When the archive (``mam``) stored it, the copy carries
  the archive's ``<stanza-id/>``.

Eligibility (XEP-0280 §6): ``chat``; ``normal`` with a ``<body/>``; any type but
``groupchat``/``error``/``headline`` carrying an IM payload (XEP-0085 chat states,
XEP-0184 receipts, XEP-0333 markers, invitations).  Never: ``groupchat``, errors (the
XEP's "error to an eligible message" needs per-message state: not done), messages with
``<private xmlns='urn:xmpp:carbons:2'/>`` or the XEP-0334 ``<no-copy/>`` hint, and
received MUC private messages (``<x xmlns='http://jabber.org/protocol/muc#user'/>``: the
room already sends them to every joined resource).  ``<private/>`` is removed from a
message before it leaves (§7).

Security (§11): a client trusts a ``<received/>``/``<sent/>`` wrapper only from its own
bare JID.  A message to an account whose sender is not that account and that holds such a
wrapper is a forgery attempt: the wrappers are removed before anything else sees the
message (the archive included), and a message with nothing else in it is dropped.
"""

from __future__ import annotations

from typing import Any

from xmppd.core.module import Module
from xmppd.core.moduleapi import Interest, ModuleAPI
from xmppd.jid import JID, jid_or_none
from xmppd.xml.element import Element
from xmppd.xml.stanza import CLIENT_NS, StanzaError, own_account, reply

CARBONS_NS = "urn:xmpp:carbons:2"
FORWARD_NS = "urn:xmpp:forward:0"
HINTS_NS = "urn:xmpp:hints"
MUC_USER_NS = "http://jabber.org/protocol/muc#user"
DELIVERED_EVENT = "message/delivered"  # declared by the message module

#: Payloads that make a body-less message an IM message worth copying (§6).
IM_PAYLOADS = frozenset({
    "http://jabber.org/protocol/chatstates",
    "urn:xmpp:receipts",
    "urn:xmpp:chat-markers:0",
    "jabber:x:conference",
})


def _enabled() -> bool:
    """A session's state here: carbons are on."""
    return True


def eligible(stanza: Element, received: bool) -> bool:
    """Whether ``stanza`` is copied (XEP-0280 §6; see the module docstring)."""
    mtype = stanza.attrs.get("type", "normal")
    if mtype in ("groupchat", "error", "headline"):
        return False
    body = im = False
    for child in stanza.elements():
        ns = child.ns
        if ns == CARBONS_NS and child.name == "private":
            return False
        if ns == HINTS_NS and child.name == "no-copy":
            return False
        if ns == MUC_USER_NS:
            if received and child.name == "x" and child.find("invite", MUC_USER_NS) is None:
                return False  # a MUC private message: the room replicates it
            im = True
        elif ns in IM_PAYLOADS:
            im = True
        elif child.name == "body" and ns == stanza.ns:
            body = True
    return mtype == "chat" or body or im


def _is_wrapper(child: Element) -> bool:
    return child.ns == CARBONS_NS and child.name in ("received", "sent")


def wrap(stanza: Element, kind: str, owner: str, to: str) -> Element:
    """``stanza`` forwarded inside a ``<received/>`` or ``<sent/>`` carbon for ``to``."""
    attrs = {"from": owner, "to": to}
    mtype = stanza.attrs.get("type")
    if mtype is not None:
        attrs["type"] = mtype
    forwarded = Element("forwarded", FORWARD_NS, {}, [stanza])
    return Element("message", CLIENT_NS, attrs, [Element(kind, CARBONS_NS, {}, [forwarded])])


class Carbons(Module):
    """Copies messages to an account's carbons-enabled resources."""

    name = "carbons"
    workers_safe = True
    stateful = True  # which sessions enabled carbons
    xeps = ("XEP-0280",)
    depends = ("message",)

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        self.sessions = api.router.sessions
        self.hosts = api.hosts
        api.add_feature(CARBONS_NS)
        for to in ("bare", "host"):
            api.iq_handler("set", CARBONS_NS, "enable", self.enable, to=to)
            api.iq_handler("set", CARBONS_NS, "disable", self.disable, to=to)
        # Forgeries are removed before anything else looks at the message (archive too).
        # What each handler needs to see (the router skips it otherwise): a wrapper or
        # <private/> is a child in CARBONS_NS; copies are made only for an account with a
        # carbons-enabled session (quiet otherwise: set at bind and disable, ended by
        # every enable, ModuleAPI.state).
        wrappers = Interest(payloads=(CARBONS_NS,))
        api.hook("message/full", self.unforge, priority=1000, interest=wrappers)
        api.hook("message/bare", self.unforge, priority=1000)
        # After blocking (100) and the archive (50), which may refuse or stamp the message.
        api.hook("message/full", self.received_full, priority=40,
                 interest=Interest(account=True))
        api.hook(DELIVERED_EVENT, self.received_bare)
        api.hook("message/outbound", self.sent, priority=40,
                 interest=Interest(payloads=(CARBONS_NS,), account=True))
        api.hook("resource-bound", lambda session: api.quiet_without_state(session.bare))
        # an account bound on another worker too (what it enables comes as a mirror)
        api.hook("remote-bound", lambda session: api.quiet_without_state(session.bare))
        api.provide("carbons", self)  # XEP-0386 inline enable (modules/sasl2.py)
        # Which sessions of other workers enabled carbons (their copies are made here too).
        api.on_mirror(self.mirror)
        # carried to the worker or node where the session resumes (stream management)
        api.on_handover(lambda s: True if self.enabled(s) else None,
                        lambda s, _value: self.enable_session(s))

    # -- enable / disable ------------------------------------------------------------------

    def _session(self, iq: Element, origin: Any) -> Any:
        if iq.attrs.get("to") in self.hosts:
            if getattr(origin, "jid", None) is None:
                raise StanzaError("forbidden")
        else:
            own_account(iq, origin)
        return origin

    def enable(self, iq: Element, origin: Any, payload: Element) -> Element:
        self.enable_session(self._session(iq, origin))
        return reply(iq)

    def disable(self, iq: Element, origin: Any, payload: Element) -> Element:
        session = self._session(iq, origin)
        self.api.drop_state(session)
        self.api.quiet_without_state(session.bare)
        self.api.share(session, None)
        return reply(iq)

    def enable_session(self, session: Any) -> None:
        """Enable carbons for ``session`` (also the XEP-0386 Bind2 inline ``<enable/>``)."""
        self.api.state(session, _enabled)
        self.api.share(session, True)

    def mirror(self, session: Any, value: Any) -> None:
        if value:
            self.api.state(session, _enabled)
        else:
            self.api.drop_state(session)

    def enabled(self, session: Any) -> bool:
        return self.api.peek_state(session) is not None

    # -- forgery -----------------------------------------------------------------------------

    def unforge(self, stanza: Element, origin: Any, *target: Any) -> bool:
        """Remove carbon wrappers from a message not sent by the recipient's own account."""
        wrappers = [c for c in stanza.elements() if _is_wrapper(c)]
        if not wrappers:
            return False
        owner = target[0].bare if target and target[0] is not None else _bare(stanza.get("to"))
        if owner is None:
            owner = getattr(origin, "bare", None)
        sender = _bare(stanza.get("from"))
        if sender is not None and sender == owner:
            return False  # one's own account (a client echoing a carbon to itself)
        self.api.log.info("removed a forged carbon from %s to %s", stanza.get("from"), owner)
        for wrapper in wrappers:
            stanza.remove(wrapper)
        return next(stanza.elements(), None) is None  # nothing left: dropped

    # -- copies ------------------------------------------------------------------------------

    def _copy(self, stanza: Element, kind: str, bare: JID, skip: Any) -> None:
        owner = None
        for session in self.sessions.resources(bare):
            if session in skip or self.api.peek_state(session) is None:
                continue
            if owner is None:
                owner = str(bare)
            session.send(wrap(stanza, kind, owner, session.jid.full))

    def received_full(self, stanza: Element, origin: Any, target: Any) -> None:
        if self.sessions.count(target.bare) > 1 and eligible(stanza, True):
            self._copy(stanza, "received", target.bare, (target, origin))

    def received_bare(self, stanza: Element, origin: Any, chosen: list) -> None:
        bare = chosen[0].bare
        if self.sessions.count(bare) > len(chosen) and eligible(stanza, True):
            self._copy(stanza, "received", bare, (*chosen, origin))

    def sent(self, stanza: Element, session: Any) -> None:
        private = stanza.find("private", CARBONS_NS)
        if private is not None:
            stanza.remove(private)  # §7: the recipient need not see it
            return
        if self.sessions.count(session.bare) < 2 or not eligible(stanza, False):
            return
        if _bare(stanza.get("to")) == session.bare:
            return  # to one's own account: the other resources get it as received
        copy = stanza
        mam = self.api.service("mam")
        sid = mam.sent_stanza_id(stanza) if mam is not None else None
        if sid is not None:
            copy = stanza.copy()
            copy.append(sid)
        self._copy(copy, "sent", session.bare, (session,))


def _bare(text: str | None) -> JID | None:
    jid = jid_or_none(text)
    return None if jid is None else jid.bare
