"""XEP-0163 Personal Eventing Protocol: a PubSub service on every account's bare JID.

Publishing auto-creates the node with PEP defaults (access model ``presence``, one item,
persistent, last item sent on presence), honouring ``publish-options`` as preconditions
(XEP-0060 §7.1.5; ``pubsub#max_items = max`` included, which bookmarks (XEP-0402) need).
Only the account publishes, configures and deletes; others retrieve and subscribe as the
node's access model allows.

Who hears of a new item: the account's own available resources, and its contacts with a
'from' subscription allowed by the access model, in both cases only the resources whose
entity capabilities (XEP-0115) show ``<node>+notify``, plus explicit XEP-0060 subscribers.
The server learns capabilities from presence: a local resource's own broadcast, a remote
contact's presence to the account; an unknown ``ver`` is asked once (disco#info to that
entity, answer verified against the hash) and cached.  When a resource's capabilities
become known, it gets the last item of each node it is interested in and may see.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from xmppd.core.module import Option
from xmppd.core.moduleapi import ModuleAPI
from xmppd.jid import JID, JIDError
from xmppd.xml.element import Element

from ._pubsub import EVENT_NS, NS, OWNER_NS, PubSubError
from ._pubsub.caps import CapsCache, caps_of
from ._pubsub.engine import Engine, Item, Limits
from ._pubsub.node import BASE_DEFAULTS
from ._pubsub.protocol import PubSubBase

FEATURES = ("access-open", "access-presence", "access-roster", "access-whitelist",
            "auto-create", "auto-subscribe", "config-node", "create-nodes", "delete-items",
            "delete-nodes", "filtered-notifications", "last-published", "persistent-items",
            "publish", "publish-options", "purge-nodes", "retract-items", "retrieve-items",
            "retrieve-affiliations", "retrieve-subscriptions", "subscribe", "rsm",
            "item-ids", "modify-affiliations", "manage-subscriptions", "retrieve-default",
            "access-authorize", "presence-notifications")
#: Module event: (owner bare JID str, node, Item) -- an item was published on a PEP node.
PUBLISHED_EVENT = "pep/published"


async def _wait(pending: Any) -> None:
    await pending


_NO_FEATURES: frozenset[str] = frozenset()


class CapsState:
    """A local session's capabilities: the ``ver`` it shows and its features once known."""

    __slots__ = ("ver", "features")

    def __init__(self) -> None:
        self.ver: str | None = None
        self.features: frozenset[str] = _NO_FEATURES  # (each frozenset() is 216 bytes)


def limit_options(items: int, size: int, nodes: int, subs: int) -> dict[str, Option]:
    return {
        "max_items": Option(int, items, "items kept per node at most (also what max_items="
                                        "max means)", min=1),
        "max_item_size": Option(int, size, "bytes of one item's payload at most", min=1),
        "max_nodes": Option(int, nodes, "nodes an account may own", min=1),
        "max_subscriptions": Option(int, subs, "subscriptions an account may hold", min=1),
    }


def limits_from(options: Any) -> Limits:
    return Limits(options["max_items"], options["max_item_size"], options["max_nodes"],
                  options["max_subscriptions"])


class Pep(PubSubBase):
    name = "pep"
    stateful = True  # remote contacts' capabilities, sessions' interests
    xeps = ("XEP-0163", "XEP-0060", "XEP-0115", "XEP-0223")
    soft_depends = ("roster", "presence")  # without it, every bound resource counts as available
    options = {
        **limit_options(256, 131072, 100, 500),
        "default_max_items": Option(int, 1, "max_items of an auto-created node", min=1),
        "default_access_model": Option(str, "presence", "access model of a new node",
                                       choices=("open", "presence", "roster", "whitelist")),
    }

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        # accounts' nodes are many and small, and mostly read by their owner's publishes
        self.engine = Engine(api.open_store("keyvalue"), api.open_store("archive"),
                             limits_from(api.options), cache_size=2048)
        self._take_defaults(api.options)
        self.caps = CapsCache(api.send)
        # remote full JIDs that sent available presence to a local account, with their ver
        self.remote: dict[str, dict[str, str]] = {}
        api.declare(PUBLISHED_EVENT)
        api.provide("pep", self)
        for itype in ("get", "set"):
            api.iq_handler(itype, NS, "pubsub", self.iq_pubsub, to="bare")
            api.iq_handler(itype, OWNER_NS, "pubsub", self.iq_owner, to="bare")
        api.add_feature(NS, account=True)
        api.add_identity("pubsub", "pep", account=True)  # XEP-0163 §1: the account is a PEP service
        for feature in FEATURES:
            api.add_feature(f"{NS}#{feature}", account=True)
        api.hook("presence/outbound", self.own_presence)
        api.hook("presence/bare", self.contact_presence, priority=5)
        api.hook("presence/full", self.contact_presence_full, priority=5)
        api.hook("iq/response", self.iq_response)
        api.hook("session-closed", self.closed)
        api.hook("account-deleting", self.account_deleting)

    def _take_defaults(self, opts: Any) -> None:
        self.defaults = {**BASE_DEFAULTS, "access_model": opts["default_access_model"],
                         "max_items": opts["default_max_items"]}

    def reconfigure(self, api: ModuleAPI, old: Any) -> bool:
        """Limits and node defaults apply to what is published or created from now on."""
        self.engine.limits = limits_from(api.options)
        self._take_defaults(api.options)
        return True

    # -- addressing -----------------------------------------------------------------------------

    def locate(self, iq: Element, origin: Any) -> tuple[str, str]:
        to = iq.get("to")
        if to is None:
            jid = getattr(origin, "jid", None)
            if jid is None:
                raise PubSubError("bad-request")
            return str(jid.bare), str(jid.bare)
        bare = str(JID(to).bare)
        return bare, bare

    def may_create(self, owner: str, requester: JID) -> bool:
        return str(requester.bare) == owner

    def quota_owner(self, owner: str, requester: JID) -> str | None:
        return owner

    def published(self, owner: str, node: str, item: Item) -> None:
        result = self.api.fire(PUBLISHED_EVENT, owner, node, item)
        if not isinstance(result, bool):
            self.api.spawn(_wait(result))

    async def publish_as_owner(self, owner: str, node: str, item_id: str,
                               payload: Element | None, config: dict[str, Any] | None = None
                               ) -> None:
        """Publish on an account's node on its behalf (other modules: vCard, private)."""
        record = await self.engine.node(owner, node)
        if record is None:
            record = await self.engine.create(owner, node, {**self.defaults, **(config or {})},
                                              owner)
        item = await self.engine.publish(owner, node, record, item_id, payload, owner)
        self.notify_item(owner, node, record, item,
                         await self.recipients(owner, node, record, owner))

    async def retract_as_owner(self, owner: str, node: str, ids: list[str]) -> None:
        record = await self.engine.node(owner, node)
        if record is None:
            return
        try:
            gone = await self.engine.retract(owner, node, ids)
        except PubSubError:
            return
        items = Element("items", EVENT_NS, {"node": node}, [])
        for item_id in gone:
            items.subelement("retract", attrs={"id": item_id})
        self.notify(owner, await self.recipients(owner, node, record, owner), items)

    # -- recipients -------------------------------------------------------------------------------

    def session_features(self, session: Any) -> frozenset[str]:
        st = self.api.peek_state(session)
        return _NO_FEATURES if st is None else st.features

    def interested_sessions(self, bare: JID, want: str) -> list[str]:
        presence = self.api.service("presence")
        return [str(s.jid) for s in self.api.router.sessions.resources(bare)
                if want in self.session_features(s)
                and (presence is None or presence.available(s))]

    @staticmethod
    def contact_allowed(record: dict[str, Any], contact: str, groups: Iterable[str],
                        has_from: bool) -> bool:
        aff = record.get("affiliations", {}).get(contact, "none")
        if aff == "outcast":
            return False
        if aff in ("owner", "publisher", "member"):
            return True
        config = record["config"]
        model = config.get("access_model", "presence")
        if model in ("open", "presence"):
            return has_from
        if model == "roster":
            return has_from and bool(set(groups) & set(config.get("roster_groups_allowed", [])))
        if model == "authorize":
            return any(j.split("/", 1)[0] == contact and s.get("state") == "subscribed"
                       for j, s in record.get("subscriptions", {}).items())
        return False

    async def recipients(self, owner: str, node: str, record: dict[str, Any],
                         service: str) -> list[str]:
        want = node + "+notify"
        owner_jid = JID(owner)
        out = self.interested_sessions(owner_jid, want)
        remote = self.remote.get(owner, {})
        for item in await self.roster_items(owner_jid):
            has_from = item.subscription in ("from", "both")
            if not self.contact_allowed(record, item.jid, item.groups, has_from):
                continue
            try:
                contact = JID(item.jid)
            except JIDError:
                continue
            if contact.domain in self.api.hosts:
                out.extend(self.interested_sessions(contact, want))
            else:
                out.extend(j for j, ver in remote.items()
                           if j.split("/", 1)[0] == item.jid
                           and want in self.caps.features.get(ver, ()))
        if record["config"].get("access_model") == "open":
            seen = {j.split("/", 1)[0] for j in out}
            out.extend(j for j, ver in remote.items() if j.split("/", 1)[0] not in seen
                       and want in self.caps.features.get(ver, ()))
        have = set(out)
        covered = {j.split("/", 1)[0] for j in have}
        for jid, sub in record.get("subscriptions", {}).items():
            if sub.get("state") == "subscribed" and jid not in have and jid not in covered:
                out.append(jid)
                have.add(jid)
        return list(dict.fromkeys(out))

    # -- entity capabilities -----------------------------------------------------------------------

    def own_presence(self, stanza: Element, session: Any) -> None:
        if stanza.get("to") is not None or stanza.get("type") is not None:
            return
        caps = caps_of(stanza)
        if caps is None:  # no state for a client that shows no caps
            return
        st = self.api.state(session, CapsState)
        if caps[2] == st.ver:
            return
        st.ver = caps[2]
        domain = session.jid.domain

        def known(features: frozenset[str], session: Any = session, ver: str = caps[2]) -> None:
            state = self.api.peek_state(session)
            if state is None or state.ver != ver or self.api.router.sessions.get(session.jid) \
                    is not session:
                return
            state.features = features
            self.api.spawn(self.last_items_for_local(session, features))

        features = self.caps.lookup(domain, str(session.jid), caps, known)
        if features is not None:
            known(features)

    async def roster_items(self, owner: JID) -> tuple[Any, ...]:
        """The rows of ``owner``'s roster (none when the roster module is disabled)."""
        rosters = self.api.service("roster")
        return () if rosters is None else (await rosters.get(owner)).items

    async def last_items_for_local(self, session: Any, features: frozenset[str]) -> None:
        """Last items of the account's own nodes and of its contacts' (local) nodes."""
        user = session.jid.bare
        owners = [str(user)]
        for item in await self.roster_items(user):
            if item.subscription in ("to", "both"):
                try:
                    if JID(item.jid).domain in self.api.hosts:
                        owners.append(item.jid)
                except JIDError:
                    continue
        for owner in owners:
            await self.send_last_items(owner, session.jid, features)

    async def send_last_items(self, owner: str, to: JID, features: frozenset[str]) -> None:
        for node in await self.engine.nodes(owner):
            if node + "+notify" not in features:
                continue
            record = await self.engine.node(owner, node)
            if record is None or record["config"].get("send_last_published_item") not in (
                    "on_sub_and_presence",):
                continue
            if str(to.bare) != owner and not await self.may_see(record, to):
                continue
            await self.send_last(owner, owner, node, record, str(to))

    def contact_presence_full(self, stanza: Element, origin: Any, session: Any) -> None:
        self.contact_presence(stanza, origin)

    def contact_presence(self, stanza: Element, origin: Any) -> None:
        """Remote contacts' capabilities, from the presence they send local accounts."""
        try:
            sender = JID(stanza.get("from", ""))
            target = JID(stanza.get("to", "")).bare
        except JIDError:
            return
        if sender.domain in self.api.hosts or sender.resource is None:
            return
        ptype = stanza.get("type")
        owner = str(target)
        if ptype == "unavailable":
            seen = self.remote.get(owner)
            if seen is not None:
                seen.pop(str(sender), None)
                if not seen:
                    del self.remote[owner]
            return
        caps = caps_of(stanza) if ptype is None else None
        if caps is None:
            return
        seen = self.remote.setdefault(owner, {})
        if seen.get(str(sender)) == caps[2]:
            return
        seen[str(sender)] = caps[2]

        def known(features: frozenset[str]) -> None:
            self.api.spawn(self.send_last_items(owner, sender, features))

        features = self.caps.lookup(target.domain, str(sender), caps, known)
        if features is not None:
            known(features)

    def iq_response(self, stanza: Element, origin: Any) -> bool:
        return self.caps.response(stanza)

    def closed(self, session: Any, abrupt: bool) -> None:
        self.api.drop_state(session)

    async def account_deleting(self, jid: JID) -> None:
        await self.engine.forget_account(str(jid))
        self.engine.forget_owner(str(jid))  # its nodes go with its data
