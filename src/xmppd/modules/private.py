"""XEP-0049 private XML storage, with the XEP-0048 ↔ XEP-0402 bookmarks bridge.

Each account stores one element per namespace (key-value ``(bare, <namespace>)``); only
the account itself may get or set (``forbidden`` otherwise).  A query with no child, more
than one child on get, a child without a namespace, or a reserved namespace
(``jabber:iq:private``, ``jabber:client``, ``jabber:server``, ``vcard-temp``) is
``not-acceptable``, as is an element over the size limit.

With the ``pep`` module, ``storage:bookmarks`` is not stored here: a get returns the
account's XEP-0402 bookmarks (``urn:xmpp:bookmarks:1`` PEP items) converted to the
XEP-0048 form, and a set publishes them there (and retracts the ones left out), so old
and new clients see the same bookmarks (``urn:xmpp:bookmarks:1#compat``).
"""

from __future__ import annotations

from typing import Any

from xmppd.core.module import Module, Option
from xmppd.core.moduleapi import ModuleAPI
from xmppd.jid import JID, JIDError
from xmppd.xml.element import Element
from xmppd.xml.stanza import StanzaError, decode_stanza, encode_stanza, own_account, reply

PRIVATE_NS = "jabber:iq:private"
RESERVED = frozenset({PRIVATE_NS, "jabber:client", "jabber:server", "vcard-temp"})
BOOKMARKS_NS = "storage:bookmarks"
BOOKMARKS2 = "urn:xmpp:bookmarks:1"
BOOKMARK_CONFIG = {"access_model": "whitelist", "persist_items": True, "max_items": "max",
                   "send_last_published_item": "never"}


def to_legacy(items: list[Any]) -> Element:
    storage = Element("storage", BOOKMARKS_NS, {}, [])
    for item in items:
        conf = item.payload
        if conf is None:
            continue
        attrs = {"jid": item.id}
        if conf.get("name"):
            attrs["name"] = conf.get("name")
        if conf.get("autojoin") in ("1", "true"):
            attrs["autojoin"] = "true"
        out = storage.subelement("conference", attrs=attrs)
        for field in ("nick", "password"):
            text = conf.findtext(field, BOOKMARKS2)
            if text:
                out.subelement(field, text=text)
    return storage


def from_legacy(storage: Element) -> dict[str, Element]:
    out = {}
    for conf in storage.findall("conference", BOOKMARKS_NS):
        try:
            jid = str(JID(conf.get("jid", "")))
        except JIDError:
            raise StanzaError("not-acceptable", "a bookmark's jid is not a JID") from None
        attrs = {}
        if conf.get("name"):
            attrs["name"] = conf.get("name")
        if conf.get("autojoin") in ("1", "true"):
            attrs["autojoin"] = "true"
        new = Element("conference", BOOKMARKS2, attrs, [])
        for field in ("nick", "password"):
            text = conf.findtext(field, BOOKMARKS_NS)
            if text:
                new.subelement(field, text=text)
        out[jid] = new
    return out


class Private(Module):
    name = "private"
    workers_safe = True
    xeps = ("XEP-0049", "XEP-0048", "XEP-0402")
    soft_depends = ("pep",)
    options = {
        "max_size": Option(int, 65536, "bytes of one stored element at most", min=256),
    }

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        self.store = api.open_store("keyvalue")
        api.iq_handler("get", PRIVATE_NS, "query", self.handle, to="bare")
        api.iq_handler("set", PRIVATE_NS, "query", self.handle, to="bare")
        api.add_feature(PRIVATE_NS)
        if api.service("pep") is not None:
            api.add_feature(BOOKMARKS2 + "#compat", account=True)

    async def handle(self, iq: Element, origin: Any, payload: Element) -> Element | None:
        bare = str(own_account(iq, origin))
        kids = list(payload.elements())
        setting = iq.get("type") == "set"
        if not kids or (not setting and len(kids) > 1):
            raise StanzaError("not-acceptable", "one child element expected")
        for kid in kids:
            if not kid.ns or kid.ns in RESERVED:
                raise StanzaError("not-acceptable", f"namespace {kid.ns!r} may not be stored")
        pep = self.api.service("pep")
        if setting and pep is not None and any(k.ns == BOOKMARKS_NS for k in kids) \
                and pep.forward_to_owner(iq, origin):
            return None  # bookmarks are PEP items: written on the worker of its PEP nodes
        if not setting:
            kid = kids[0]
            out = reply(iq)
            query = out.subelement("query", PRIVATE_NS)
            if kid.ns == BOOKMARKS_NS and pep is not None:
                query.append(to_legacy(await pep.engine.items(bare, BOOKMARKS2)))
                return out
            data = await self.store.get(bare, kid.ns)
            query.append(decode_stanza(data.encode()) if data is not None
                         else Element(kid.name, kid.ns, {}, []))
            return out
        for kid in kids:
            data = encode_stanza(kid)
            if len(data) > self.api.options["max_size"]:
                raise StanzaError("not-acceptable", "too large")
        for kid in kids:
            if kid.ns == BOOKMARKS_NS and pep is not None:
                await self.set_bookmarks(pep, bare, kid)
            else:
                await self.store.set(bare, kid.ns, encode_stanza(kid).decode())
        return reply(iq)

    async def set_bookmarks(self, pep: Any, bare: str, storage: Element) -> None:
        wanted = from_legacy(storage)
        have = {i.id for i in await pep.engine.items(bare, BOOKMARKS2)}
        for jid, conf in wanted.items():
            await pep.publish_as_owner(bare, BOOKMARKS2, jid, conf, BOOKMARK_CONFIG)
        gone = sorted(have - set(wanted))
        if gone:
            await pep.retract_as_owner(bare, BOOKMARKS2, gone)
