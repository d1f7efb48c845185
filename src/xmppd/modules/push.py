"""XEP-0357 push notifications: wake a phone whose app is asleep.

A client enables push for its account with ``<enable xmlns='urn:xmpp:push:0' jid node>``
(its app server's PubSub service and node, plus an optional ``publish-options`` form that
usually carries a secret); ``<disable jid [node]>`` removes one or all registrations of
that service.  Registrations are kept in this module's key-value store (owner: the bare
JID; one record per service and node), so they survive restarts and go with the account.

When is a push sent (one ``<publish/>`` IQ from the account's bare JID to each registration
concerned; what the app server does with it is its business):

- an *important* message is stored offline for the account (no session could take it):
  every registration of the account; the ``offline`` module calls :meth:`Push.offline`
  once the message is committed, so the woken app finds it;
- an important stanza is queued for a stream-management session that is detached (its
  connection lost, waiting for a resumption): the registrations that session enabled (by
  resource); the ``sm`` module calls :meth:`Push.detached`, also when a session detaches
  with important stanzas unacknowledged.

Important, as in Prosody's ``mod_cloud_notify``: a message (not ``headline`` or ``error``)
with a body, an end-to-end encrypted payload (OMEMO), a call proposal (XEP-0353) or a MUC
invitation, or a carbon of such a message received by another resource; of a room's
``groupchat`` messages (queued for a detached session that sits in the room), those with a
body.  Chat states, receipts and subjects alone do not wake anyone.

What the notification tells the app server (``urn:xmpp:push:summary``): ``message-count``
(messages pushed since the account last bound a resource) always; the sender and the body
only when the operator turns on ``include_sender`` / ``include_body`` (off by default: the
app server and the platform's push service would learn them).  An error of type ``cancel``
or ``auth`` from the app server (the app was uninstalled, the secret is wrong) removes the
registration; other errors are logged.  Responses are matched without state (the IQ id names
the node), so any worker may receive them.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from xmppd.core.module import Module, Option
from xmppd.core.moduleapi import ModuleAPI
from xmppd.jid import JID, JIDError
from xmppd.modules._forms import DATA_NS, single, submitted
from xmppd.xml.element import Element
from xmppd.xml.stanza import StanzaError, decode_stanza, encode_stanza, own_account, reply

PUSH_NS = "urn:xmpp:push:0"
SUMMARY_NS = "urn:xmpp:push:summary"
PUBSUB_NS = "http://jabber.org/protocol/pubsub"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
CARBONS_NS = "urn:xmpp:carbons:2"
FORWARD_NS = "urn:xmpp:forward:0"
#: payloads that make a message worth waking a phone for, besides a body
IMPORTANT = frozenset({
    ("encrypted", "eu.siacs.conversations.axolotl"),  # OMEMO (legacy)
    ("encrypted", "urn:xmpp:omemo:2"),
    ("propose", "urn:xmpp:jingle-message:0"),  # a call (XEP-0353)
    ("x", "jabber:x:conference"),  # a MUC invitation (XEP-0249)
    ("x", "http://jabber.org/protocol/muc#user"),  # a mediated one (XEP-0045 §7.8.2)
})
MAX_NODE = 1024
MAX_FORM = 4096
ID_PREFIX = "push:"


def important(stanza: Element) -> bool:
    """A stanza worth a push notification (see the module docstring)."""
    kind = stanza.get("type", "normal")
    if stanza.name != "message" or kind in ("headline", "error"):
        return False
    for child in stanza.elements():
        if child.name == "body" and child.ns == stanza.ns:
            return True
        if kind == "groupchat":  # a room's chatter: only what has a body
            continue
        if (child.name, child.ns) in IMPORTANT:
            return True
        if child.name == "received" and child.ns == CARBONS_NS:  # another resource got it
            inner = child.find("forwarded", FORWARD_NS)
            message = None if inner is None else next(
                (m for m in inner.elements() if m.name == "message"), None)
            return message is not None and important(message)
    return False


def node_tag(node: str) -> str:
    """The node's short hash: it names a push's IQ id, so that the answer finds its
    registration without state."""
    return hashlib.sha256(node.encode()).hexdigest()[:12]


def record_key(service: str, node: str) -> str:
    return hashlib.sha256(f"{service}\0{node}".encode()).hexdigest()[:32]


class Push(Module):
    """Registrations (``enable``/``disable``) and the notifications to app servers."""

    name = "push"
    workers_safe = True
    xeps = ("XEP-0357",)
    soft_depends = ("offline", "sm")
    options = {
        "include_body": Option(bool, False, "put the message's body in the notification "
                               "(the app server and the platform's push service read it)"),
        "include_sender": Option(bool, False, "put the sender's JID in the notification"),
        "max_registrations": Option(int, 20, "push registrations one account may have "
                                    "(one per app server node)", min=1, max=1000),
    }

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        self.store = api.open_store("keyvalue")
        #: pushes sent per account since it last bound a resource (message-count)
        self.counts: dict[str, int] = {}
        self.sent = 0
        self.failed = 0
        api.iq_handler("set", PUSH_NS, "enable", self.enable, to="bare")
        api.iq_handler("set", PUSH_NS, "disable", self.disable, to="bare")
        api.hook("iq/response", self.response)
        api.hook("resource-bound", self.bound)
        api.add_feature(PUSH_NS, account=True)
        api.counter("push_notifications", "push notifications sent to app servers",
                    lambda: self.sent)
        api.counter("push_errors", "push notifications app servers answered with an error",
                    lambda: self.failed)
        api.provide("push", self)

    # -- registrations ----------------------------------------------------------------------

    async def enable(self, iq: Element, origin: Any, payload: Element) -> Element:
        owner = str(own_account(iq, origin))
        service, node = self._target(payload, need_node=True)
        form = payload.find("x", DATA_NS)
        options = None
        if form is not None:
            if single(submitted(form), "FORM_TYPE") != PUBLISH_OPTIONS:
                raise StanzaError("bad-request", "the form must be pubsub#publish-options")
            options = encode_stanza(form).decode()
            if len(options) > MAX_FORM:
                raise StanzaError("not-acceptable", "the publish-options form is too large")
        key = record_key(service, node)
        limit = self.api.options["max_registrations"]
        existing = await self.store.items(owner)
        if key not in existing and len(existing) >= limit:
            self.api.count_limit("modules.push.max_registrations")
            raise StanzaError("resource-constraint", f"at most {limit} push registrations",
                              type="wait")
        await self.store.set(owner, key, {"jid": service, "node": node, "options": options,
                                          "resource": origin.jid.resource})
        self.api.log.info("push enabled: account=%s service=%s", owner, service)
        return reply(iq)

    async def disable(self, iq: Element, origin: Any, payload: Element) -> Element:
        owner = str(own_account(iq, origin))
        service, node = self._target(payload, need_node=False)
        for key, rec in (await self.store.items(owner)).items():
            if rec.get("jid") == service and (node is None or rec.get("node") == node):
                await self.store.delete(owner, key)
        self.api.log.info("push disabled: account=%s service=%s", owner, service)
        return reply(iq)

    @staticmethod
    def _target(payload: Element, need_node: bool) -> tuple[str, Any]:
        try:
            service = str(JID(payload.get("jid", "")))
        except JIDError:
            raise StanzaError("jid-malformed", "'jid' is not the app server's JID") from None
        node = payload.get("node")
        if node is not None and not 0 < len(node) <= MAX_NODE:
            raise StanzaError("bad-request", "bad 'node'")
        if need_node and node is None:
            raise StanzaError("bad-request", "'node' is required")
        return service, node

    def bound(self, session: Any) -> None:
        """The user is back: the count of pushed messages starts again."""
        self.counts.pop(str(session.jid.bare), None)

    # -- triggers (called by the offline and sm modules) --------------------------------------

    def offline(self, bare: Any, stanza: Element) -> None:
        """``stanza`` was stored offline for the account ``bare``."""
        if important(stanza):
            self.api.spawn(self._push(str(bare), None, stanza), eager=False)

    def detached(self, session: Any, stanzas: list[Element]) -> None:
        """``stanzas`` wait for the detached stream-management ``session``."""
        last = next((s for s in reversed(stanzas) if important(s)), None)
        if last is not None:
            self.api.spawn(self._push(str(session.jid.bare), session.jid.resource, last),
                           eager=False)

    async def _push(self, owner: str, resource: str | None, stanza: Element) -> None:
        records = await self.store.items(owner)
        targets = [r for r in records.values() if resource is None or r.get("resource") == resource]
        if not targets:
            return
        count = self.counts[owner] = self.counts.get(owner, 0) + 1
        for rec in targets:
            self.api.send(self._notification(owner, rec, stanza, count))
            self.sent += 1

    def _notification(self, owner: str, rec: dict[str, Any], stanza: Element,
                      count: int) -> Element:
        opts = self.api.options
        iq = Element("iq", "jabber:client", {
            "type": "set", "from": owner, "to": rec["jid"],
            "id": f"{ID_PREFIX}{node_tag(rec['node'])}:{secrets.token_hex(6)}"}, [])
        pubsub = iq.subelement("pubsub", PUBSUB_NS)
        item = pubsub.subelement("publish", attrs={"node": rec["node"]}).subelement("item")
        form = item.subelement("notification", PUSH_NS).subelement(
            "x", DATA_NS, {"type": "submit"})
        fields = [("FORM_TYPE", SUMMARY_NS), ("message-count", str(count))]
        if opts["include_sender"] and stanza.get("from"):
            fields.append(("last-message-sender", stanza.get("from")))
        body = stanza.findtext("body", stanza.ns) if opts["include_body"] else None
        if body:
            fields.append(("last-message-body", body))
        for var, value in fields:
            form.subelement("field", attrs={"var": var}).subelement("value", text=value)
        if rec.get("options"):
            pubsub.subelement("publish-options").append(decode_stanza(rec["options"].encode()))
        return iq

    # -- the app server's answers --------------------------------------------------------------

    def response(self, stanza: Element, origin: Any) -> bool:
        ident = stanza.get("id", "")
        if not ident.startswith(ID_PREFIX):
            return False
        if stanza.get("type") == "error":
            self.failed += 1
            error = stanza.find("error")
            kind = None if error is None else error.get("type")
            self.api.log.info("push refused by %s for %s (error type %s)%s",
                              stanza.get("from"), stanza.get("to"), kind,
                              ": registration removed" if kind in ("cancel", "auth") else "")
            if kind in ("cancel", "auth"):
                self.api.spawn(self._forget(stanza.get("to", ""), stanza.get("from", ""),
                                            ident.split(":")[1]), eager=False)
        return True

    async def _forget(self, owner: str, service: str, tag: str) -> None:
        """Remove the registrations of ``owner`` with ``service`` whose node hashes to
        ``tag`` (the app server said the device is gone)."""
        try:
            owner = str(JID(owner).bare)
        except JIDError:
            return
        for key, rec in (await self.store.items(owner)).items():
            if rec.get("jid") == service and node_tag(rec.get("node", "")) == tag:
                await self.store.delete(owner, key)

