"""The ``pubsub`` and ``pubsub#owner`` IQ protocol (XEP-0060 §6-§8), shared by PEP and the
service: :class:`PubSubBase` parses requests, checks affiliations and access models, calls
the :class:`~.engine.Engine` and sends notifications.  A subclass says where a request is
addressed (``locate``), who may create nodes, the node defaults and who hears of an item
(``recipients``).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

from xmppd.core.module import Module
from xmppd.jid import JID, JIDError
from xmppd.modules._fanout import Broadcast, Deliverer
from xmppd.randompool import random_bytes
from xmppd.storage.stores import ItemNotFound
from xmppd.xml.element import Element
from xmppd.xml.stanza import CLIENT_NS, reply

from . import EVENT_NS, NS, OWNER_NS, PUBLISH_OPTIONS_NS, RSM_NS, PubSubError, unsupported
from .collection_nodes import Collections
from .engine import Engine, Item
from .forms import find_form, form_type, read_form
from .node import (
    AFFILIATIONS,
    affiliation_of,
    check_preconditions,
    config_form,
    parse_config,
    subscribed,
)
from .suboptions import merged, options_form, options_of, parse_options

MODIFIERS = ("publisher", "owner")


def _bad(app: str, text: str | None = None) -> PubSubError:
    return PubSubError("bad-request", app, text=text)


def requester_of(iq: Element, origin: Any) -> JID:
    jid = getattr(origin, "jid", None)
    if jid is not None:
        return jid
    try:
        return JID(iq.get("from", ""))
    except JIDError:
        raise PubSubError("bad-request") from None


def item_element(item: Item, ns: str, payload: bool = True, publisher: bool = False) -> Element:
    attrs = {"id": item.id}
    if publisher and item.publisher:
        attrs["publisher"] = item.publisher
    el = Element("item", ns, attrs, [])
    if payload and item.payload is not None:
        el.append(item.payload.copy())
    return el


class PubSubBase(Collections, Module):
    """IQ handling common to PEP and the service (not itself a loadable module)."""

    engine: Engine
    defaults: dict[str, Any]
    #: collection nodes (XEP-0060 §6.1.x, XEP-0248) and subscription options (§6.3) are
    #: offered by the service, not by PEP
    collections = False
    subscription_options = False
    _deliverer: Deliverer | None = None  # notifications, made on first use

    # -- what subclasses decide ----------------------------------------------------------

    def locate(self, iq: Element, origin: Any) -> tuple[str, str]:
        """(store owner, service JID) the request is addressed to."""
        raise NotImplementedError

    def may_create(self, owner: str, requester: JID) -> bool:
        raise NotImplementedError

    def autocreate(self, owner: str, requester: JID) -> bool:
        return self.may_create(owner, requester)

    def quota_owner(self, owner: str, requester: JID) -> str | None:
        return str(requester.bare)

    async def recipients(self, owner: str, node: str, record: dict[str, Any],
                         service: str) -> Iterable[str]:
        """Who hears of a change of ``node`` (full or bare JIDs)."""
        raise NotImplementedError

    def published(self, owner: str, node: str, item: Item) -> None:
        """Called after each publish (PEP: the vCard avatar bridge)."""

    def deliver_to(self, jid: str, sub: dict[str, Any]) -> list[str]:
        """Where a notification for subscription ``sub`` of ``jid`` goes (its options:
        ``pubsub#deliver``, the service also ``pubsub#show-values``)."""
        if not sub.get("options"):
            return [jid]
        return [jid] if options_of(sub)["deliver"] else []

    # -- access ----------------------------------------------------------------------------

    def is_owner(self, record: dict[str, Any], bare: str) -> bool:
        return affiliation_of(record, bare) == "owner"

    def require_owner(self, record: dict[str, Any], requester: JID) -> None:
        if not self.is_owner(record, str(requester.bare)):
            raise PubSubError("forbidden")

    async def roster_item(self, owner_jid: str, contact: str) -> Any:
        try:
            jid = JID(owner_jid)
        except JIDError:
            return None
        if jid.localpart is None or jid.domain not in self.api.hosts:
            return None
        rosters = self.api.service("roster")
        if rosters is None:  # the roster module is disabled: nobody is in a roster
            return None
        return (await rosters.get(jid)).get(contact)

    async def check_access(self, record: dict[str, Any], requester: JID) -> None:
        """May ``requester`` see the node's items or subscribe (XEP-0060 §4.5)?"""
        bare = str(requester.bare)
        aff = affiliation_of(record, bare)
        if aff == "outcast":
            raise PubSubError("forbidden")
        if aff in ("owner", "publisher", "member"):
            return
        config = record["config"]
        model = config.get("access_model", "open")
        if model == "open":
            return
        if model == "whitelist":
            raise PubSubError("not-allowed", "closed-node")
        if model == "authorize":
            if subscribed(record, str(requester), bare):
                return
            raise PubSubError("not-authorized", "not-subscribed")
        owners = [j for j, a in record.get("affiliations", {}).items() if a == "owner"]
        for owner_jid in owners:
            item = await self.roster_item(owner_jid, bare)
            if item is None:
                continue
            if model == "presence" and item.subscription in ("from", "both"):
                return
            if model == "roster" and set(item.groups) & set(config.get("roster_groups_allowed", [])):
                return
        if model == "presence":
            raise PubSubError("not-authorized", "presence-subscription-required")
        raise PubSubError("not-authorized", "not-in-roster-group")

    async def may_see(self, record: dict[str, Any], jid: JID) -> bool:
        try:
            await self.check_access(record, jid)
        except PubSubError:
            return False
        return True

    # -- entry points ----------------------------------------------------------------------

    async def iq_pubsub(self, iq: Element, origin: Any, payload: Element) -> Element | None:
        try:
            return await self._pubsub(iq, origin, payload)
        except PubSubError as exc:
            return exc.reply(iq)

    async def iq_owner(self, iq: Element, origin: Any, payload: Element) -> Element:
        try:
            return await self._owner(iq, origin, payload)
        except PubSubError as exc:
            return exc.reply(iq)

    async def _pubsub(self, iq: Element, origin: Any, payload: Element) -> Element | None:
        owner, service = self.locate(iq, origin)
        requester = requester_of(iq, origin)
        kids = list(payload.elements())
        if not kids:
            raise PubSubError("bad-request")
        verb = kids[0]
        settable = iq.get("type") == "set"
        if verb.name == "create" and settable:
            return await self.create(iq, owner, service, requester, verb,
                                     payload.find("configure"))
        if verb.name == "publish" and settable:
            return await self.publish(iq, owner, service, requester, verb,
                                      payload.find("publish-options"))
        if verb.name == "retract" and settable:
            return await self.retract(iq, owner, service, requester, verb)
        if verb.name == "subscribe" and settable:
            return await self.subscribe(iq, owner, service, requester, verb,
                                        payload.find("options"))
        if verb.name == "unsubscribe" and settable:
            return await self.unsubscribe(iq, owner, requester, verb)
        if verb.name == "items" and not settable:
            return await self.get_items(iq, owner, requester, verb, payload.find("set", RSM_NS))
        if verb.name == "subscriptions" and not settable:
            return await self.own_subscriptions(iq, owner, requester, verb)
        if verb.name == "affiliations" and not settable:
            return await self.own_affiliations(iq, owner, requester, verb)
        if verb.name == "default" and not settable and self.subscription_options:
            return await self.default_options(iq, owner, verb)
        if verb.name == "default" and not settable:
            return self.default_form(iq, NS)
        if verb.name == "options" and self.subscription_options:
            return await self.sub_options(iq, owner, requester, verb, settable)
        if verb.name == "options":
            raise unsupported("subscription-options")
        raise PubSubError("feature-not-implemented")

    async def _owner(self, iq: Element, origin: Any, payload: Element) -> Element:
        owner, service = self.locate(iq, origin)
        requester = requester_of(iq, origin)
        kids = list(payload.elements())
        if not kids:
            raise PubSubError("bad-request")
        verb = kids[0]
        if verb.name == "default" and iq.get("type") == "get":
            return self.default_form(iq, OWNER_NS)
        node = verb.get("node")
        if not node:
            raise _bad("nodeid-required")
        record = await self.engine.must_node(owner, node)
        self.require_owner(record, requester)
        settable = iq.get("type") == "set"
        if verb.name == "configure":
            if not settable:
                out = reply(iq)
                conf = out.subelement("pubsub", OWNER_NS).subelement("configure", attrs={"node": node})
                config = record["config"]
                if self.collections and config.get("node_type") == "collection":
                    config = {**config, "children": await self.engine.children(owner, node)}
                conf.append(config_form(config, collections=self.collections))
                return out
            return await self.configure(iq, owner, service, node, record, requester, verb)
        if verb.name == "delete" and settable:
            recipients = await self.recipients(owner, node, record, service)
            await self.engine.delete(owner, node)
            if record["config"].get("notify_delete", True):
                self.notify(service, recipients, Element("delete", EVENT_NS, {"node": node}, []))
            return reply(iq)
        if verb.name == "purge" and settable:
            await self.engine.purge(owner, node)
            recipients = await self.recipients(owner, node, record, service)
            self.notify(service, recipients, Element("purge", EVENT_NS, {"node": node}, []))
            return reply(iq)
        if verb.name == "subscriptions":
            return await self.owner_subscriptions(iq, owner, service, node, record, verb, settable)
        if verb.name == "affiliations":
            return await self.owner_affiliations(iq, owner, node, record, verb, settable)
        raise PubSubError("feature-not-implemented")

    # -- create / configure ------------------------------------------------------------------

    def default_form(self, iq: Element, ns: str) -> Element:
        out = reply(iq)
        out.subelement("pubsub", ns).subelement("default").append(
            config_form(self.defaults, collections=self.collections))
        return out

    def submitted_config(self, parent: Element | None, strict: bool = True) -> dict[str, Any]:
        form = find_form(parent)
        if form is None:
            return {}
        if form.get("type") == "cancel":
            return {}
        fields = read_form(form)
        if form_type(fields) not in (None, "http://jabber.org/protocol/pubsub#node_config",
                                     PUBLISH_OPTIONS_NS):
            raise PubSubError("not-acceptable", text="wrong FORM_TYPE")
        return parse_config(fields, strict=strict)

    async def create(self, iq: Element, owner: str, service: str, requester: JID,
                     verb: Element, configure: Element | None) -> Element:
        if not self.may_create(owner, requester):
            raise PubSubError("forbidden")
        node = verb.get("node") or secrets.token_hex(8)
        config = {**self.defaults, **self.submitted_config(configure)}
        children = config.pop("children", None) or []
        parents = config.get("collection") or []
        if (config.get("node_type", "leaf") != "leaf" or parents or children) \
                and not self.collections:
            raise unsupported("collections")
        if children and config.get("node_type") != "collection":
            raise PubSubError("not-acceptable", text="only a collection has children")
        await self.check_parents(owner, node, parents, requester)
        await self.check_children(owner, node, children, requester)
        await self.engine.create(owner, node, config, str(requester.bare),
                                 quota_owner=self.quota_owner(owner, requester))
        for child in children:
            await self.engine.set_collections(owner, child, add=(node,))
        await self.notify_association(owner, service, parents, node, "associate")
        for child in children:
            await self.notify_association(owner, service, [node], child, "associate")
        out = reply(iq)
        if not verb.get("node"):
            out.subelement("pubsub", NS).subelement("create", attrs={"node": node})
        return out

    async def configure(self, iq: Element, owner: str, service: str, node: str,
                        old: dict[str, Any], requester: JID, verb: Element) -> Element:
        changes = self.submitted_config(verb)
        node_type = old["config"].get("node_type", "leaf")
        if changes.get("node_type", node_type) != node_type:
            raise PubSubError("not-acceptable", text="the node type cannot change")
        children = changes.pop("children", None)
        if node_type != "collection":
            if children:
                raise PubSubError("not-acceptable", text="only a collection has children")
            children = None
        if (changes.get("collection") or children) and not self.collections:
            raise unsupported("collections")
        was_in = old["config"].get("collection", [])
        joined = [c for c in changes.get("collection", was_in) if c not in was_in]
        left = [c for c in was_in if c not in changes.get("collection", was_in)]
        await self.check_parents(owner, node, joined, requester)
        had = await self.engine.children(owner, node) if children is not None else []
        added = [c for c in children or () if c not in had]
        dropped = [c for c in had if children is not None and c not in children]
        await self.check_children(owner, node, added, requester)
        record = await self.engine.configure(owner, node, changes)
        for child in added:
            await self.engine.set_collections(owner, child, add=(node,))
        for child in dropped:
            await self.engine.set_collections(owner, child, remove=(node,))
        await self.notify_association(owner, service, joined, node, "associate")
        await self.notify_association(owner, service, left, node, "disassociate")
        for kids, kind in ((added, "associate"), (dropped, "disassociate")):
            for child in kids:
                await self.notify_association(owner, service, [node], child, kind)
        if record["config"].get("notify_config"):
            recipients = await self.recipients(owner, node, record, service)
            self.notify(service, recipients,
                        Element("configuration", EVENT_NS, {"node": node}, []))
        return reply(iq)

    # -- publish / retract -------------------------------------------------------------------

    async def publish(self, iq: Element, owner: str, service: str, requester: JID,
                      verb: Element, options: Element | None) -> Element | None:
        node = verb.get("node")
        if not node:
            raise _bad("nodeid-required")
        items = verb.findall("item")
        if len(items) > 1:
            raise _bad("invalid-payload", "one item per publish")
        wanted = self.submitted_config(options, strict=False)
        engine = self.engine
        record = await engine.node(owner, node)
        if record is None:
            if not self.autocreate(owner, requester):
                raise PubSubError("item-not-found")
            if wanted.get("node_type", "leaf") != "leaf" or wanted.get("children"):
                raise PubSubError("not-acceptable", text="publishing creates leaf nodes")
            if wanted.get("collection") and not self.collections:
                raise unsupported("collections")
            await self.check_parents(owner, node, wanted.get("collection", ()), requester)
            config = {**self.defaults, **wanted}
            try:
                record = await engine.create(owner, node, config, str(requester.bare),
                                             quota_owner=self.quota_owner(owner, requester))
            except PubSubError as exc:
                if exc.condition != "conflict":  # a concurrent publish created it
                    raise
                record = await engine.must_node(owner, node)
                check_preconditions(record["config"], wanted)
        else:
            check_preconditions(record["config"], wanted)
        if record["config"].get("node_type") == "collection":  # collections hold no items
            raise unsupported("publish")
        bare = str(requester.bare)
        aff = affiliation_of(record, bare)
        model = record["config"].get("publish_model", "publishers")
        if aff == "outcast" or (
            aff not in ("owner", "publisher", "publish-only")
            and not (model == "open" or (model == "subscribers"
                                         and subscribed(record, str(requester), bare)))
        ):
            raise PubSubError("forbidden")
        config = record["config"]
        payload = None
        item_id = None
        if items:
            item_id = items[0].get("id")
            children = list(items[0].elements())
            if len(children) > 1:
                raise _bad("invalid-payload", "one payload per item")
            payload = children[0] if children else None
        elif config.get("persist_items", True) or config.get("deliver_payloads", True):
            raise _bad("item-required")
        if payload is None and items and config.get("deliver_payloads", True):
            raise _bad("payload-required")
        item = await engine.publish(owner, node, record, item_id, payload, bare)
        recipients = await self.recipients(owner, node, record, service)
        via = []  # notifications through the node's collections
        if self.collections and config.get("collection") and config.get(
                "deliver_notifications", True):
            event = Element("items", EVENT_NS, {"node": node}, [])
            event.append(item_element(item, EVENT_NS, config.get("deliver_payloads", True),
                                      publisher=True))
            via = await self.collection_messages(owner, service, record, event, recipients)
        out = reply(iq)
        pub = out.subelement("pubsub", NS).subelement("publish", attrs={"node": node})
        pub.subelement("item", attrs={"id": item.id})
        self.api.send(out)  # the publisher hears first, then the subscribers
        if config.get("deliver_notifications", True):
            self.notify_item(service, node, record, item, recipients)
            for msg in via:
                self.api.send(msg)
        self.published(owner, node, item)
        return None

    async def retract(self, iq: Element, owner: str, service: str, requester: JID,
                      verb: Element) -> Element:
        node = verb.get("node")
        if not node:
            raise _bad("nodeid-required")
        ids = [i.get("id") for i in verb.findall("item") if i.get("id")]
        if not ids:
            raise _bad("item-required")
        record = await self.engine.must_node(owner, node)
        if affiliation_of(record, str(requester.bare)) not in ("owner", "publisher"):
            raise PubSubError("forbidden")
        gone = await self.engine.retract(owner, node, ids)
        if verb.get("notify") in ("1", "true") or record["config"].get("notify_retract", True):
            items = Element("items", EVENT_NS, {"node": node}, [])
            for item_id in gone:
                items.subelement("retract", attrs={"id": item_id})
            recipients = await self.recipients(owner, node, record, service)
            via = []
            if self.collections and record["config"].get("collection"):
                via = await self.collection_messages(owner, service, record, items, recipients)
            self.notify(service, recipients, items)
            for msg in via:
                self.api.send(msg)
        return reply(iq)

    # -- notifications ------------------------------------------------------------------------

    def event_message(self, service: str, to: str, content: Element) -> Element:
        msg = Element("message", CLIENT_NS,
                      {"from": service, "to": to, "type": "headline",
                       "id": random_bytes(6).hex()}, [])  # pooled: one per recipient
        msg.subelement("event", EVENT_NS).append(content)
        return msg

    def notify(self, service: str, recipients: Iterable[str], content: Element) -> None:
        """The same event to every recipient, serialized once: only ``to`` differs (a
        node with thousands of subscribers costs one serialization, not thousands)."""
        msg = Element("message", CLIENT_NS, {"from": service, "type": "headline",
                                            "id": random_bytes(6).hex()}, [])
        msg.subelement("event", EVENT_NS).append(content)
        if self._deliverer is None:
            self._deliverer = Deliverer(self.api.router)
        self._deliverer.deliver_all(Broadcast(msg), recipients)

    def notify_item(self, service: str, node: str, record: dict[str, Any], item: Item,
                    recipients: Iterable[str]) -> None:
        items = Element("items", EVENT_NS, {"node": node}, [])
        items.append(item_element(item, EVENT_NS, record["config"].get("deliver_payloads", True),
                                  publisher=True))
        self.notify(service, recipients, items)

    async def send_last(self, owner: str, service: str, node: str, record: dict[str, Any],
                        to: str) -> None:
        if record["config"].get("send_last_published_item", "never") == "never":
            return
        item = await self.engine.last_item(owner, node)
        if item is not None:
            self.notify_item(service, node, record, item, [to])

    # -- items ---------------------------------------------------------------------------------

    async def get_items(self, iq: Element, owner: str, requester: JID, verb: Element,
                        rsm: Element | None) -> Element:
        node = verb.get("node")
        if not node:
            raise _bad("nodeid-required")
        record = await self.engine.must_node(owner, node)
        await self.check_access(record, requester)
        ids = [i.get("id") for i in verb.findall("item") if i.get("id")]
        out = reply(iq)
        pubsub = out.subelement("pubsub", NS)
        items_el = pubsub.subelement("items", attrs={"node": node})
        page_info = None
        if ids:
            found = await self.engine.items(owner, node, ids=ids)
            if not found:
                raise PubSubError("item-not-found")
            got = sorted(found, key=lambda i: ids.index(i.id))
        elif rsm is not None:
            try:
                limit = int(rsm.findtext("max", RSM_NS) or "20")
            except ValueError:
                raise PubSubError("bad-request") from None
            before = rsm.find("before", RSM_NS)
            try:
                got, total = await self.engine.page(
                    owner, node, max(0, min(limit, 100)), rsm.findtext("after", RSM_NS),
                    None if before is None else before.text,
                )
            except ItemNotFound:
                raise PubSubError("item-not-found") from None
            page_info = (got, total)
        else:
            max_items = verb.get("max_items")
            try:
                limit = int(max_items) if max_items else None
            except ValueError:
                raise PubSubError("bad-request") from None
            got = list(reversed(await self.engine.items(owner, node, max_items=limit)))
        for item in got:
            items_el.append(item_element(item, NS, publisher=True))
        if page_info is not None:
            items_page, total = page_info
            rset = pubsub.subelement("set", RSM_NS)
            if items_page:
                rset.subelement("first", text=items_page[0].id)
                rset.subelement("last", text=items_page[-1].id)
            rset.subelement("count", text=str(total))
        return out

    # -- subscriptions ---------------------------------------------------------------------------

    def subscriber_jid(self, verb: Element, requester: JID) -> JID:
        try:
            jid = JID(verb.get("jid", ""))
        except JIDError:
            raise _bad("invalid-jid") from None
        if jid.bare != requester.bare:
            raise _bad("invalid-jid")
        return jid

    async def subscribe(self, iq: Element, owner: str, service: str, requester: JID,
                        verb: Element, options: Element | None = None) -> Element | None:
        node = verb.get("node")
        if not node:
            raise _bad("nodeid-required")
        jid = self.subscriber_jid(verb, requester)
        record = await self.engine.must_node(owner, node)
        chosen = None  # §6.3.7 subscribe and configure
        form = find_form(options) if self.subscription_options else None
        if form is not None and form.get("type") != "cancel":
            collection = record["config"].get("node_type") == "collection"
            chosen = merged({}, parse_options(form, collection))
        state = "subscribed"
        model = record["config"].get("access_model", "open")
        aff = affiliation_of(record, str(jid.bare))
        if model == "authorize" and aff not in ("owner", "publisher", "member"):
            if aff == "outcast":
                raise PubSubError("forbidden")
            state = "pending"
        else:
            await self.check_access(record, jid)
        sub = await self.engine.subscribe(owner, node, str(jid), str(jid.bare), state,
                                          options=chosen)
        out = reply(iq)
        pubsub = out.subelement("pubsub", NS)
        pubsub.subelement("subscription", attrs={
            "node": node, "jid": str(jid), "subid": sub["subid"], "subscription": state})
        if chosen is not None:
            pubsub.subelement("options", attrs={"node": node, "jid": str(jid),
                                                "subid": sub["subid"]}).append(options_form(
                options_of(sub), record["config"].get("node_type") == "collection", "result"))
        self.api.send(out)  # §6.1.7: the last item follows the subscription result
        if state == "pending":
            self.ask_owners(service, node, record, str(jid))
        elif options_of(sub)["deliver"]:
            await self.send_last(owner, service, node, record, str(jid))
        return None

    def options_jid(self, verb: Element, requester: JID, record: dict[str, Any]) -> JID:
        """§6.3.4: the subscriber whose options are asked for (``jid`` required); another
        entity's only for a node owner."""
        if not verb.get("jid"):
            raise _bad("jid-required")
        try:
            jid = JID(verb.get("jid", ""))
        except JIDError:
            raise _bad("invalid-jid") from None
        if jid.bare != requester.bare and not self.is_owner(record, str(requester.bare)):
            raise _bad("invalid-jid")
        return jid

    async def sub_options(self, iq: Element, owner: str, requester: JID, verb: Element,
                          settable: bool) -> Element:
        """§6.3: get (a form) or set (a submitted form) a subscription's options."""
        node = verb.get("node")
        if not node:
            raise _bad("nodeid-required")
        record = await self.engine.must_node(owner, node)
        jid = self.options_jid(verb, requester, record)
        sub = record.get("subscriptions", {}).get(str(jid))
        if sub is None:
            raise PubSubError("unexpected-request", "not-subscribed")
        subid = verb.get("subid")
        if subid and subid != sub["subid"]:
            raise PubSubError("not-acceptable", "invalid-subid")
        collection = record["config"].get("node_type") == "collection"
        if not settable:
            out = reply(iq)
            el = out.subelement("pubsub", NS).subelement("options", attrs={
                "node": node, "jid": str(jid), "subid": sub["subid"]})
            el.append(options_form(options_of(sub), collection))
            return out
        form = find_form(verb)
        if form is None:
            raise _bad("invalid-options", "a submitted form is required")
        if form.get("type") == "cancel":
            return reply(iq)
        chosen = merged(sub.get("options", {}), parse_options(form, collection))
        await self.engine.set_options(owner, node, str(jid), chosen)
        return reply(iq)

    async def default_options(self, iq: Element, owner: str, verb: Element) -> Element:
        """§6.4: the default subscription options (of a node, if named)."""
        node = verb.get("node")
        collection = False
        attrs = {}
        if node:
            record = await self.engine.must_node(owner, node)
            collection = record["config"].get("node_type") == "collection"
            attrs["node"] = node
        out = reply(iq)
        out.subelement("pubsub", NS).subelement("default", attrs=attrs).append(
            options_form({}, collection or self.collections and not node))
        return out

    def ask_owners(self, service: str, node: str, record: dict[str, Any], jid: str) -> None:
        """§8.6: tell the owners a subscription waits for their approval (they approve it
        with an owner ``subscriptions`` set)."""
        owners = [j for j, a in record.get("affiliations", {}).items() if a == "owner"]
        for owner_jid in owners:
            msg = Element("message", CLIENT_NS, {"from": service, "to": owner_jid}, [])
            msg.subelement("body", text=f"{jid} asks to subscribe to {node}")
            self.api.send(msg)

    async def unsubscribe(self, iq: Element, owner: str, requester: JID, verb: Element) -> Element:
        node = verb.get("node")
        if not node:
            raise _bad("nodeid-required")
        jid = self.subscriber_jid(verb, requester)
        await self.engine.must_node(owner, node)
        if not await self.engine.unsubscribe(owner, node, str(jid)):
            raise PubSubError("unexpected-request", "not-subscribed")
        return reply(iq)

    async def own_subscriptions(self, iq: Element, owner: str, requester: JID,
                                verb: Element) -> Element:
        only = verb.get("node")
        out = reply(iq)
        subs_el = out.subelement("pubsub", NS).subelement("subscriptions")
        for node, jid, sub in await self.engine.subscriptions_of(str(requester.bare), owner):
            if only and node != only:
                continue
            subs_el.subelement("subscription", attrs={
                "node": node, "jid": jid, "subscription": sub["state"], "subid": sub["subid"]})
        return out

    async def own_affiliations(self, iq: Element, owner: str, requester: JID,
                               verb: Element) -> Element:
        out = reply(iq)
        affs = out.subelement("pubsub", NS).subelement("affiliations")
        for node in await self.engine.nodes(owner):
            record = await self.engine.node(owner, node) or {}
            aff = affiliation_of(record, str(requester.bare))
            if aff != "none":
                affs.subelement("affiliation", attrs={"node": node, "affiliation": aff})
        return out

    async def owner_subscriptions(self, iq: Element, owner: str, service: str, node: str,
                                  record: dict[str, Any], verb: Element,
                                  settable: bool) -> Element:
        if not settable:
            out = reply(iq)
            el = out.subelement("pubsub", OWNER_NS).subelement("subscriptions",
                                                               attrs={"node": node})
            for jid, sub in record.get("subscriptions", {}).items():
                el.subelement("subscription", attrs={"jid": jid, "subscription": sub["state"],
                                                     "subid": sub["subid"]})
            return out
        for entry in verb.findall("subscription"):
            try:
                jid = JID(entry.get("jid", ""))
            except JIDError:
                raise PubSubError("bad-request") from None
            state = entry.get("subscription")
            if state == "none":
                await self.engine.unsubscribe(owner, node, str(jid))
            elif state in ("subscribed", "pending"):
                await self.engine.subscribe(owner, node, str(jid), str(jid.bare), state,
                                            quota=False)
                if state == "subscribed":
                    await self.send_last(owner, service, node, record, str(jid))
            else:
                raise PubSubError("bad-request")
        return reply(iq)

    async def owner_affiliations(self, iq: Element, owner: str, node: str,
                                 record: dict[str, Any], verb: Element,
                                 settable: bool) -> Element:
        if not settable:
            out = reply(iq)
            el = out.subelement("pubsub", OWNER_NS).subelement("affiliations",
                                                               attrs={"node": node})
            for jid, aff in record.get("affiliations", {}).items():
                el.subelement("affiliation", attrs={"jid": jid, "affiliation": aff})
            return out
        changes = []
        for entry in verb.findall("affiliation"):
            try:
                jid = JID(entry.get("jid", "")).bare
            except JIDError:
                raise PubSubError("bad-request") from None
            aff = entry.get("affiliation")
            if aff not in AFFILIATIONS:
                raise PubSubError("bad-request")
            changes.append((str(jid), aff))
        owners = {j for j, a in record["affiliations"].items() if a == "owner"}
        for jid, aff in changes:
            if aff == "owner":
                owners.add(jid)
            else:
                owners.discard(jid)
        if not owners:  # §8.9.2.4: the last owner may not go
            raise PubSubError("not-acceptable")
        for jid, aff in changes:
            await self.engine.set_affiliation(owner, node, jid, aff)
        return reply(iq)
