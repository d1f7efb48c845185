"""XEP-0060 Publish-Subscribe service on ``pubsub.<domain>`` (option ``host``).

The service is served in-process: stanzas for its domain are taken on ``route/remote``
(the way components are), IQs answered with the shared engine (:mod:`._pubsub`): node
create/configure/delete, publish with publish-options, retract, purge, subscribe and
unsubscribe, items (all, by id, ``max_items``, RSM), affiliations and subscriptions
managed by owners, the access models open/presence/roster/authorize/whitelist, persistent
and transient nodes, notifications with or without payloads and the last item on
subscribe; disco#info and #items for the service, its nodes and their items.  Collection
nodes (XEP-0248 basics: ``pubsub#collection`` / ``pubsub#children``; items published to
or retracted from the nodes in a collection are notified to its subscribers with a SHIM
``Collection`` header, depth 1 or all; association notices to ``nodes`` subscriptions) and
subscription options (§6.3: ``deliver``, ``show-values``, ``subscription_type`` and
``subscription_depth``; no digests or bodies).
Local accounts create nodes (option ``creators = "anyone"`` opens it to remote users too),
up to ``max_nodes`` each.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xmppd.core.module import Option
from xmppd.core.moduleapi import ModuleAPI
from xmppd.jid import JID, JIDError
from xmppd.xml.element import Element
from xmppd.xml.stanza import StanzaError, iq_payload, reply

from ._pubsub import NS, OWNER_NS, PubSubError
from ._pubsub.caps import DISCO_INFO_NS
from ._pubsub.engine import Engine
from ._pubsub.node import BASE_DEFAULTS
from ._pubsub.protocol import PubSubBase
from ._pubsub.suboptions import options_of
from .pep import limit_options, limits_from

DISCO_ITEMS_NS = "http://jabber.org/protocol/disco#items"
FEATURES = ("access-authorize", "access-open", "access-presence", "access-roster",
            "access-whitelist", "collections", "config-node", "create-and-configure", "create-nodes",
            "delete-items", "delete-nodes", "get-pending", "instant-nodes", "item-ids",
            "last-published", "manage-subscriptions", "meta-data", "modify-affiliations",
            "outcast-affiliation", "persistent-items", "publish", "publish-options",
            "publisher-affiliation", "member-affiliation", "purge-nodes", "retract-items",
            "retrieve-affiliations", "retrieve-default", "retrieve-items",
            "retrieve-subscriptions", "subscribe", "subscription-notifications", "rsm",
            "transient-nodes", "subscription-options", "retrieve-default-sub")


class PubSub(PubSubBase):
    name = "pubsub"
    xeps = ("XEP-0060", "XEP-0059", "XEP-0248")
    collections = True
    subscription_options = True
    soft_depends = ("disco", "s2s", "roster", "presence")
    #: one worker owns every node (the engine's cache is the truth, so it must be the only
    #: writer): the others hand it the stanzas to the service as they are
    workers_safe = True
    options = {
        "host": Option(str, "", "the service's domain (default: pubsub.<each served domain>)"),
        "creators": Option(str, "local", "who may create nodes", choices=("local", "anyone")),
        "autocreate_on_publish": Option(bool, False, "publishing to a missing node creates it"),
        "default_max_items": Option(int, 10, "max_items of a new node", min=1),
        **limit_options(1000, 65536, 100, 500),
    }

    @classmethod
    def service_domains(cls, options: Mapping[str, Any], domain: str) -> tuple[str, ...]:
        return (options["host"] or f"pubsub.{domain}",)

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        self.domains: tuple[str, ...] = ()  # the service domains
        self._unlist: dict[str, Any] = {}  # service domain -> undo of its disco#items entry
        self._extra: set[str] = set()  # service domains this module told the s2s manager
        self.engine = Engine(api.open_store("keyvalue"), api.open_store("archive"),
                             limits_from(api.options))
        self.defaults = {**BASE_DEFAULTS, "max_items": api.options["default_max_items"],
                         "send_last_published_item": "on_sub", "collection": []}
        api.hook("route/remote", self.route, priority=20)
        api.hook("account-deleting", self.account_deleting)
        self.owned = False  # whether this process held the nodes when it last looked
        api.hook("owners-changed", self.owners_changed)
        api.on_changed(self.changed)
        host = api.options["host"]
        if host:  # one service, listed in disco#items of every served domain
            self._serve(host, None)
        else:
            api.hook("hosts-changed", self.hosts_changed)
            self.hosts_changed(api.domains, ())
        api.on_unload(self._unserve_all)

    def hosts_changed(self, added: Any, removed: Any) -> None:
        """``pubsub.<domain>`` for each served domain (a reload adds or removes some)."""
        for domain in removed:
            self._unserve(f"pubsub.{domain}")
        for domain in added:
            self._serve(f"pubsub.{domain}", domain)

    def _unserve_all(self) -> None:
        for service in self.domains:
            self._unserve(service)

    def _serve(self, service: str, domain: str | None) -> None:
        self.domains = (*self.domains, service)
        disco = self.api.service("disco")
        if disco is not None:
            self._unlist[service] = disco.add_item(service, "", domain)
        manager = self.api.service("s2s")  # tells the s2s manager these domains are ours
        if manager is not None and service not in manager.extra_domains:
            manager.extra_domains.add(service)
            self._extra.add(service)

    def _unserve(self, service: str) -> None:
        self.domains = tuple(d for d in self.domains if d != service)
        undo = self._unlist.pop(service, None)
        if undo is not None:
            undo()
        manager = self.api.service("s2s")
        if manager is not None and service in self._extra:
            self._extra.discard(service)
            manager.extra_domains.discard(service)

    # -- addressing ---------------------------------------------------------------------------

    def locate(self, iq: Element, origin: Any) -> tuple[str, str]:
        domain = JID(iq.get("to", "")).domain
        return domain, domain

    def may_create(self, owner: str, requester: JID) -> bool:
        return self.api.options["creators"] == "anyone" or requester.domain in self.api.hosts

    def autocreate(self, owner: str, requester: JID) -> bool:
        return self.api.options["autocreate_on_publish"] and self.may_create(owner, requester)

    async def recipients(self, owner: str, node: str, record: dict[str, Any],
                         service: str) -> list[str]:
        return [to for jid, sub in record.get("subscriptions", {}).items()
                if sub.get("state") == "subscribed" for to in self.deliver_to(jid, sub)]

    def deliver_to(self, jid: str, sub: dict[str, Any]) -> list[str]:
        """``pubsub#deliver`` off: nowhere; ``pubsub#show-values``: the subscriber's local
        resources whose presence show is one of them (a remote subscriber's presence is not
        known here: nothing)."""
        if not sub.get("options"):
            return [jid]
        options = options_of(sub)
        if not options["deliver"]:
            return []
        shows = options["show-values"]
        if not shows:
            return [jid]
        try:
            target = JID(jid)
        except JIDError:
            return []
        if target.domain not in self.api.hosts:
            return []
        presence = self.api.service("presence")
        out = []
        for session in self.api.router.sessions.resources(target.bare):
            if target.resource is not None and session.jid != target:
                continue
            last = presence.last(session) if presence is not None else None
            if last is None or last.get("type") is not None:
                continue  # not available
            if (last.findtext("show") or "online") in shows:
                out.append(str(session.jid))
        return out

    @property
    def mine(self) -> bool:
        """Whether this process owns every node (a cluster's oldest node, a worker by
        hash; always, alone)."""
        owner = self.api.owner_worker(self.name)
        return owner is not None and owner == self.api.peer

    def owners_changed(self) -> None:
        """A cluster node that stops owning the nodes (it rejoined younger) drops what it
        cached: the next time it owns them, it reads them from storage."""
        if self.owned and not self.mine:
            self.engine.forget_all()
        self.owned = self.mine

    def route(self, stanza: Element, origin: Any) -> bool:
        try:
            target = JID(stanza.get("to", ""))
        except JIDError:
            return False
        if target.domain not in self.domains:
            return False
        if not self.mine:
            owner = self.api.owner_worker(self.name)
            if owner is None:  # (only before this cluster node has joined)
                self.api.bounce(stanza, "service-unavailable", "the service is starting")
            else:
                self.api.forward(owner, stanza)
            return True
        self.owned = True
        if target.localpart is not None or target.resource is not None:
            self.api.bounce(stanza, "service-unavailable")
            return True
        if stanza.name == "iq" and stanza.get("type") in ("get", "set"):
            self.api.spawn(self.iq(stanza, origin))
        return True  # presence and messages to the service: nothing to do

    async def iq(self, stanza: Element, origin: Any) -> None:
        payload = iq_payload(stanza)
        if payload is None:
            self.api.bounce(stanza, "bad-request")
            return
        key = (stanza.get("type"), payload.ns, payload.name)
        try:
            if key[1:] == (NS, "pubsub"):
                out = await self.iq_pubsub(stanza, origin, payload)
            elif key[1:] == (OWNER_NS, "pubsub"):
                out = await self.iq_owner(stanza, origin, payload)
            elif key == ("get", DISCO_INFO_NS, "query"):
                out = await self.disco_info(stanza, payload)
            elif key == ("get", DISCO_ITEMS_NS, "query"):
                out = await self.disco_items(stanza, origin, payload)
            else:
                raise StanzaError("service-unavailable")
        except StanzaError as exc:
            self.api.bounce(stanza, exc.condition, exc.text)
            return
        if out is not None:
            self.api.send(out)

    # -- disco --------------------------------------------------------------------------------

    async def disco_info(self, iq: Element, payload: Element) -> Element:
        owner, _ = self.locate(iq, None)
        node = payload.get("node")
        out = reply(iq)
        query = out.subelement("query", DISCO_INFO_NS)
        if node:
            record = await self.engine.node(owner, node)
            if record is None:
                raise StanzaError("item-not-found")
            query.set("node", node)
            kind = record["config"].get("node_type", "leaf")
            query.subelement("identity", attrs={"category": "pubsub", "type": kind})
            query.subelement("feature", attrs={"var": NS})
            return out
        query.subelement("identity", attrs={"category": "pubsub", "type": "service",
                                            "name": "xmppd publish-subscribe"})
        for feature in sorted({DISCO_INFO_NS, DISCO_ITEMS_NS, NS,
                               *(f"{NS}#{f}" for f in FEATURES)}):
            query.subelement("feature", attrs={"var": feature})
        return out

    async def disco_items(self, iq: Element, origin: Any, payload: Element) -> Element:
        owner, service = self.locate(iq, origin)
        node = payload.get("node")
        out = reply(iq)
        query = out.subelement("query", DISCO_ITEMS_NS)
        if node:
            record = await self.engine.node(owner, node)
            if record is None:
                raise StanzaError("item-not-found")
            query.set("node", node)
            if record["config"].get("node_type") == "collection":
                await self.list_nodes(query, owner, service, await self.engine.children(owner, node))
                return out
            try:
                await self.check_access(record, JID(iq.get("from", "")))
            except (PubSubError, JIDError):
                return out
            for item in await self.engine.items(owner, node):
                query.subelement("item", attrs={"jid": service, "name": item.id})
            return out
        await self.list_nodes(query, owner, service, await self.engine.nodes(owner), top=True)
        return out

    async def list_nodes(self, query: Element, owner: str, service: str, names: list[str],
                         top: bool = False) -> None:
        """disco#items entries for ``names`` (``top``: those in no collection)."""
        for name in sorted(names):
            record = await self.engine.node(owner, name) or {}
            config = record.get("config", {})
            if top and config.get("collection"):
                continue
            attrs = {"jid": service, "node": name}
            if config.get("title"):
                attrs["name"] = config["title"]
            query.subelement("item", attrs=attrs)

    async def account_deleting(self, jid: JID) -> None:
        if self.mine:
            await self.forget(jid)
        else:  # the owner worker forgets it, before its data is deleted
            await self.api.changed(str(jid), "account-deleted")

    def changed(self, owner: str, key: str) -> Any:
        if key == "account-deleted" and self.mine:
            return self.forget(JID(owner))
        return None

    async def forget(self, jid: JID) -> None:
        """``jid``'s account is being deleted: its subscriptions and lone nodes go."""
        await self.engine.forget_account(str(jid))
        for domain in self.domains:  # nodes it owned alone go with it
            for node in await self.engine.nodes(domain):
                record = await self.engine.node(domain, node) or {}
                owners = [j for j, a in record.get("affiliations", {}).items() if a == "owner"]
                if owners == [str(jid)]:
                    await self.engine.delete(domain, node)
