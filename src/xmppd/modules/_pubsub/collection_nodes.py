"""Collection nodes (XEP-0248) for :class:`~.protocol.PubSubBase`: which nodes may be
associated, walking the tree up and down, and who hears of an item through a collection."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from xmppd.jid import JID, JIDError
from xmppd.xml.element import Element

from . import EVENT_NS, PubSubError
from .engine import Engine
from .suboptions import options_of

SHIM_NS = "http://jabber.org/protocol/shim"


class Collections:
    """The collection half of the pubsub protocol (a mixin: ``engine``, ``require_owner``,
    ``may_see``, ``deliver_to``, ``event_message`` and ``notify`` come from the class it is
    mixed into)."""

    engine: Engine

    async def check_parents(self, owner: str, node: str, parents: Iterable[str],
                            requester: JID) -> None:
        """``node`` may join ``parents``: collections the requester owns, not ``node``
        itself nor one inside it."""
        parents = list(parents)
        if not parents:
            return
        inside = await self.descendants(owner, node)
        for name in parents:
            record = await self.engine.node(owner, name)
            if record is None or record["config"].get("node_type") != "collection":
                raise PubSubError("not-acceptable", text=f"{name} is not a collection node")
            self.require_owner(record, requester)
            if name == node or name in inside:
                raise PubSubError("not-acceptable", text="collections may not form a cycle")

    async def check_children(self, owner: str, node: str, children: Iterable[str],
                             requester: JID) -> None:
        """Collection ``node`` may take ``children``: existing nodes the requester owns,
        neither ``node`` nor a collection it is inside."""
        children = list(children)
        if not children:
            return
        above = await self.ancestors(owner, node)
        for name in children:
            record = await self.engine.node(owner, name)
            if record is None:
                raise PubSubError("item-not-found", text=f"no node {name}")
            self.require_owner(record, requester)
            if name == node or name in above:
                raise PubSubError("not-acceptable", text="collections may not form a cycle")

    async def descendants(self, owner: str, node: str) -> set[str]:
        seen: set[str] = set()
        todo = [node]
        while todo:
            for child in await self.engine.children(owner, todo.pop()):
                if child not in seen:
                    seen.add(child)
                    todo.append(child)
        return seen

    async def ancestors(self, owner: str, node: str) -> set[str]:
        seen: set[str] = set()
        todo = [node]
        while todo:
            record = await self.engine.node(owner, todo.pop())
            for parent in (record or {"config": {}})["config"].get("collection", ()):
                if parent not in seen:
                    seen.add(parent)
                    todo.append(parent)
        return seen

    async def collection_subscribers(self, owner: str, parents: Iterable[str],
                                     kind: str) -> list[tuple[str, str]]:
        """(collection, JID) for each subscription of ``kind`` (items|nodes) to the
        collections ``parents`` (depth 1) or, with depth ``all``, to those above them."""
        out: list[tuple[str, str]] = []
        seen: set[str] = set()
        level, depth = list(parents), 1
        while level:
            above: list[str] = []
            for name in level:
                if name in seen:
                    continue
                seen.add(name)
                record = await self.engine.node(owner, name)
                if record is None:
                    continue
                for jid, sub in record.get("subscriptions", {}).items():
                    opts = options_of(sub)
                    if sub.get("state") != "subscribed" or opts["subscription_type"] != kind:
                        continue
                    if depth == 1 or opts["subscription_depth"] == "all":
                        out.extend((name, to) for to in self.deliver_to(jid, sub))
                above.extend(record["config"].get("collection", ()))
            level, depth = above, depth + 1
        return out

    async def collection_messages(self, owner: str, service: str, record: dict[str, Any],
                                  items: Element, already: Iterable[str]) -> list[Element]:
        """An item published to (or retracted from) a node goes to the subscribers of its
        collections too (once each, with a SHIM ``Collection`` header), if the node's
        access model lets them see it: the messages."""
        out = []
        sent = set(already)
        for collection, to in await self.collection_subscribers(
                owner, record["config"].get("collection", ()), "items"):
            if to in sent:
                continue
            sent.add(to)
            try:
                if not await self.may_see(record, JID(to)):
                    continue
            except JIDError:
                continue
            msg = self.event_message(service, to, items.copy())
            headers = msg.subelement("headers", SHIM_NS)
            headers.subelement("header", attrs={"name": "Collection"}, text=collection)
            out.append(msg)
        return out

    async def notify_association(self, owner: str, service: str, collections: Iterable[str],
                                 node: str, kind: str) -> None:
        """Tell ``nodes`` subscribers of each collection that ``node`` joined or left it."""
        for collection in collections:
            content = Element("collection", EVENT_NS, {"node": collection}, [])
            content.subelement(kind, attrs={"node": node})
            targets = {to for _, to in await self.collection_subscribers(
                owner, [collection], "nodes")}
            self.notify(service, sorted(targets), content)
