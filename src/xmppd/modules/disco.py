"""XEP-0030: Service Discovery for the server and for accounts' bare JIDs.

The features listed are exactly those the loaded modules registered through
``ModuleAPI.add_feature``; an account answers for itself only to itself (and, with the
presence module, to subscribers) — others get ``service-unavailable`` as RFC 6121 §8.5.1
suggests, so presence leaks are avoided.
"""

from __future__ import annotations

from xmppd.core.moduleapi import ModuleAPI
from xmppd.xml.element import Element
from xmppd.xml.stanza import StanzaError, reply

NAME = "disco"
XEPS = ("XEP-0030",)
INFO_NS = "http://jabber.org/protocol/disco#info"
ITEMS_NS = "http://jabber.org/protocol/disco#items"


def _info(iq: Element, identities, features) -> Element:
    out = reply(iq)
    query = out.subelement("query", INFO_NS)
    node = iq.find("query", INFO_NS).get("node")
    if node:
        raise StanzaError("item-not-found")
    for category, type_, name in identities:
        attrs = {"category": category, "type": type_}
        if name:
            attrs["name"] = name
        query.subelement("identity", attrs=attrs)
    for feature in sorted(features | {INFO_NS, ITEMS_NS}):
        query.subelement("feature", attrs={"var": feature})
    return out


def load(api: ModuleAPI) -> None:
    server = api.server

    def host_info(iq: Element, origin: object, payload: Element) -> Element:
        return _info(iq, server.identities, server.features)

    def host_items(iq: Element, origin: object, payload: Element) -> Element:
        out = reply(iq)
        query = out.subelement("query", ITEMS_NS)
        for name in sorted(server.config.components):
            query.subelement("item", attrs={"jid": name})
        return out

    def account_info(iq: Element, origin, payload: Element) -> Element:
        to = iq.get("to")
        own = getattr(origin, "jid", None)
        # Only the account itself may look; a remote server or a component has no jid.
        if origin is not None and to is not None and (own is None or str(own.bare) != to):
            raise StanzaError("service-unavailable")
        return _info(iq, [("account", "registered", "")], server.account_features)

    def account_items(iq: Element, origin, payload: Element) -> Element:
        out = reply(iq)
        out.subelement("query", ITEMS_NS)
        return out

    api.iq_handler("get", INFO_NS, "query", host_info)
    api.iq_handler("get", ITEMS_NS, "query", host_items)
    api.iq_handler("get", INFO_NS, "query", account_info, to="bare")
    api.iq_handler("get", ITEMS_NS, "query", account_items, to="bare")
