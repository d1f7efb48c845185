"""XEP-0030: Service Discovery for the server and for accounts' bare JIDs.

The features listed are exactly those the loaded modules registered through
``ModuleAPI.add_feature``; an account answers for itself only to itself (and, with the
presence module, to subscribers) — others get ``service-unavailable`` as RFC 6121 §8.5.1
suggests, so presence leaks are avoided.  Other modules add XEP-0128 data forms to the
server's disco#info through the fold event ``disco/info-extensions`` (synchronous handlers
returning the list with their forms appended, e.g. :mod:`xmppd.modules.contact`); the module
provides the service ``disco``: modules that host a service on a domain of its own (MUC on
``conference.<domain>``, pubsub on ``pubsub.<domain>``) list it in the server's disco#items
with ``disco.add_item(jid, name, domain)``, which returns the undo for ``api.on_unload``.
Configured external components are always listed.  A module that answers disco for nodes
of the server (ad-hoc commands, XEP-0050) adds a node provider with
``disco.add_node_provider(provider)``: ``provider.node_info(node, origin, domain)`` returns
``(identities, features)`` and ``provider.node_items(node, origin, domain)`` a list of
``(jid, node, name)``, each None for a node it does not know.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xmppd.core.module import Module
from xmppd.core.moduleapi import ModuleAPI
from xmppd.jid import JID, jid_or_none
from xmppd.xml.element import Element
from xmppd.xml.stanza import StanzaError, reply

INFO_NS = "http://jabber.org/protocol/disco#info"
ITEMS_NS = "http://jabber.org/protocol/disco#items"
#: fold: (forms: list[Element]) -> list -- XEP-0128 extension forms of the server's disco#info
EXTENSIONS_EVENT = "disco/info-extensions"


def _info(iq: Element, identities, features, extensions=(), node: str | None = None) -> Element:
    out = reply(iq)
    query = out.subelement("query", INFO_NS, {"node": node} if node else None)
    if not node and iq.find("query", INFO_NS).get("node"):
        raise StanzaError("item-not-found")
    for category, type_, name in identities:
        attrs = {"category": category, "type": type_}
        if name:
            attrs["name"] = name
        query.subelement("identity", attrs=attrs)
    for feature in sorted(features | {INFO_NS, ITEMS_NS}):
        query.subelement("feature", attrs={"var": feature})
    for form in extensions:
        query.append(form)
    return out


class Disco(Module):
    name = "disco"
    workers_safe = True
    xeps = ("XEP-0030",)

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        api.declare(EXTENSIONS_EVENT)
        # services other modules host: jid -> (name, the served domain listing it or None: all)
        self.items: dict[str, tuple[str, str | None]] = {}
        self.node_providers: list[Any] = []
        api.provide("disco", self)
        api.iq_handler("get", INFO_NS, "query", self.host_info)
        api.iq_handler("get", ITEMS_NS, "query", self.host_items)
        api.iq_handler("get", INFO_NS, "query", self.account_info, to="bare")
        api.iq_handler("get", ITEMS_NS, "query", self.account_items, to="bare")

    def host_info(self, iq: Element, origin: object, payload: Element) -> Element:
        node = payload.get("node")
        if node:
            for provider in self.node_providers:
                found = provider.node_info(node, origin, _domain(iq))
                if found is not None:
                    return _info(iq, found[0], set(found[1]), node=node)
            raise StanzaError("item-not-found")
        forms = self.api.fold(EXTENSIONS_EVENT, [])
        return _info(iq, *self.api.disco_info(), forms if isinstance(forms, list) else ())

    def host_items(self, iq: Element, origin: object, payload: Element) -> Element:
        node = payload.get("node")
        if node:
            return self.node_items(iq, origin, node)
        out = reply(iq)
        query = out.subelement("query", ITEMS_NS)
        domain = _bare(iq.get("to", ""))
        domain = str(domain) if domain is not None else None
        for name in sorted(self.api.components):
            query.subelement("item", attrs={"jid": name})
        for jid, (name, where) in sorted(self.items.items()):
            if where is not None and domain is not None and where != domain:
                continue  # another served domain's service
            query.subelement("item", attrs={"jid": jid, "name": name} if name else {"jid": jid})
        return out

    def node_items(self, iq: Element, origin: object, node: str) -> Element:
        for provider in self.node_providers:
            items = provider.node_items(node, origin, _domain(iq))
            if items is not None:
                out = reply(iq)
                query = out.subelement("query", ITEMS_NS, {"node": node})
                for jid, item_node, name in items:
                    attrs = {"jid": jid, "node": item_node}
                    if name:
                        attrs["name"] = name
                    query.subelement("item", attrs=attrs)
                return out
        raise StanzaError("item-not-found")

    def add_node_provider(self, provider: Any) -> Callable[[], None]:
        """Answer disco#info and #items of the server's nodes through ``provider`` (see the
        module docstring); returns the undo (for the caller's ``api.on_unload``)."""
        self.node_providers.append(provider)
        return lambda: self.node_providers.remove(provider)

    def add_item(self, jid: str, name: str = "", domain: str | None = None) -> Callable[[], None]:
        """List ``jid`` (a service such as ``conference.<domain>``) in disco#items of the
        served ``domain`` (None: of every served domain); returns the undo (for the
        caller's ``api.on_unload``)."""
        entry = (name, domain)
        self.items[jid] = entry

        def undo() -> None:
            if self.items.get(jid) == entry:
                del self.items[jid]

        return undo

    def account_info(self, iq: Element, origin: object, payload: Element) -> Element:
        to = iq.get("to")
        own = getattr(origin, "jid", None)
        # Only the account itself may look; a remote server or a component has no jid.
        if origin is not None and to is not None and (own is None or _bare(to) != own.bare):
            raise StanzaError("service-unavailable")
        return _info(iq, *self.api.disco_info(account=True))

    def account_items(self, iq: Element, origin: object, payload: Element) -> Element:
        out = reply(iq)
        out.subelement("query", ITEMS_NS)
        return out


def _domain(iq: Element) -> str:
    """The served domain an IQ to the server is addressed to (its 'to', else the sender's)."""
    jid = jid_or_none(iq.get("to") or iq.get("from") or "")
    return jid.domain if jid is not None else ""


def _bare(text: str) -> JID | None:
    """The bare JID ``text`` names once normalized (``Alice@LOCALHOST`` is alice@localhost)."""
    jid = jid_or_none(text)
    return None if jid is None else jid.bare
