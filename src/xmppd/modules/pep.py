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

With several workers (``xmppd run --workers N``) each account's nodes belong to one worker,
``owner_worker(<bare JID>)`` (the engine's node cache must have one writer; hashing the
owners spreads the load): PubSub IQs addressed to an account, vCard and private-bookmark
sets (which publish on its behalf) and remote contacts' presence with caps are handed
there as they are.  A session's ``+notify`` features are learnt on its own worker and
shared with the others (:meth:`ModuleAPI.share`), so an owner's worker sees every
contact's interests; each worker sends the last items of the owners it holds.  Across
cluster nodes every account's nodes are the oldest live node's (the same rule as the MUC
rooms: stable when a node joins; when it dies, the next oldest reads them from storage).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from xmppd.core.module import Option
from xmppd.core.moduleapi import ModuleAPI
from xmppd.jid import JID, JIDError
from xmppd.xml.element import Element

from ._pubsub import EVENT_NS, NS, OWNER_NS, PubSubError
from ._pubsub.caps import CapsCache, asker, caps_of, worker_prefix
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
    #: each account's nodes are one worker's, the sessions' +notify features are shared
    workers_safe = True
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
        # several workers or nodes: each holds the accounts it owns
        self.split = api.clustered
        self.started = time.time_ns()
        self.caps = CapsCache(api.send)
        self.owned = False  # whether this process owned accounts when it last looked
        # remote full JIDs that sent available presence to a local account, with their ver
        self.remote: dict[str, dict[str, str]] = {}
        api.declare(PUBLISHED_EVENT)
        api.provide("pep", self)
        pubsub, owner = ((self.forwarding(self.iq_pubsub), self.forwarding(self.iq_owner))
                         if self.split else (self.iq_pubsub, self.iq_owner))
        for itype in ("get", "set"):
            api.iq_handler(itype, NS, "pubsub", pubsub, to="bare")
            api.iq_handler(itype, OWNER_NS, "pubsub", owner, to="bare")
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
        if self.split:
            api.on_mirror(self.mirror)
            api.on_changed(self.changed)
            api.hook("owners-changed", self.owners_changed)
            api.hook("server-started", lambda server: self.owners_changed())
            self.owners_changed()
            api.on_handover(self.export, self.restore)

    def _take_defaults(self, opts: Any) -> None:
        self.defaults = {**BASE_DEFAULTS, "access_model": opts["default_access_model"],
                         "max_items": opts["default_max_items"]}

    def reconfigure(self, api: ModuleAPI, old: Any) -> bool:
        """Limits and node defaults apply to what is published or created from now on."""
        self.engine.limits = limits_from(api.options)
        self._take_defaults(api.options)
        return True

    # -- workers ----------------------------------------------------------------------------------

    def owners_changed(self) -> None:
        """This process's id may have changed (a cluster node's epoch): the caps queries'
        ids name it; a node that stops owning accounts (it rejoined younger) drops what it
        cached of them."""
        peer = self.api.peer
        self.caps.prefix = worker_prefix(peer) if peer is not None else "caps"
        owner = self.api.owner_worker("")
        owned = owner is not None and owner == peer
        if self.owned and not owned and self.api.config.cluster_redis:
            self.engine.forget_all()
            self.remote.clear()
        self.owned = owned

    def owns(self, owner: str) -> bool:
        """Are ``owner``'s nodes this process's (always, alone)?"""
        if not self.split:
            return True
        worker = self.api.owner_worker(owner)
        return worker is not None and worker == self.api.peer

    def forward_to_owner(self, iq: Element, origin: Any) -> bool:
        """Hand an IQ addressed to an account (or, without ``to``, the sender's own) to the
        worker that owns its nodes, unless it is this one; True if handed on (the caller
        answers nothing: the owner's worker does).  Other modules that publish on an
        account's behalf (vCard, private) call it first."""
        if not self.split:
            return False
        to = iq.get("to")
        try:
            owner = str(JID(to).bare) if to is not None else str(origin.jid.bare)
        except (JIDError, AttributeError):
            return False
        worker = self.api.owner_worker(owner)
        if worker is None or worker == self.api.peer:  # (None: a node not joined yet)
            return False
        if to is None:  # there it comes from another worker's session: say whose it is
            iq.set("to", owner)
        self.api.forward(worker, iq)
        return True

    def forwarding(self, handler: Any) -> Any:
        """``handler`` for the IQs of the accounts this worker owns; the others are handed on."""
        def handle(iq: Element, origin: Any, payload: Element) -> Any:
            if self.forward_to_owner(iq, origin):
                return None
            return handler(iq, origin, payload)
        return handle

    def mirror(self, session: Any, value: Any) -> None:
        """Another worker learnt the ``+notify`` features of its ``session`` ("<stamp>
        <feature> ..."); the last items of the owners this worker holds follow."""
        if not isinstance(value, str):
            return
        stamp, _, names = value.partition(" ")
        features = frozenset(names.split())
        st = self.api.state(session, CapsState)
        if st.features == features:
            return
        st.features = features
        # learnt before this worker started: its previous life sent them already
        if features and stamp.isdigit() and int(stamp) >= self.started:
            self.api.spawn(self.last_items_for_local(session, features))

    def export(self, session: Any) -> dict[str, Any] | None:
        """A session's caps and features, for the worker it moves to."""
        st = self.api.peek_state(session)
        return None if st is None else {"ver": st.ver, "features": sorted(st.features)}

    def restore(self, session: Any, value: Any) -> None:
        st = self.api.state(session, CapsState)
        st.ver = value.get("ver")
        st.features = frozenset(value.get("features") or ())
        # stamp 0: the other workers sent this session their last items already
        self.api.share(session, "0 " + " ".join(f for f in sorted(st.features)
                                                 if f.endswith("+notify")))

    def changed(self, owner: str, key: str) -> Any:
        if key == "account-deleted":
            return self.forget(owner, drop_index=False)
        return None

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
        """Publish on an account's node on its behalf (other modules: vCard, private; on
        the owner's worker, see :meth:`forward_to_owner`)."""
        self._check_owned(owner)
        record = await self.engine.node(owner, node)
        if record is None:
            record = await self.engine.create(owner, node, {**self.defaults, **(config or {})},
                                              owner)
        item = await self.engine.publish(owner, node, record, item_id, payload, owner)
        self.notify_item(owner, node, record, item,
                         await self.recipients(owner, node, record, owner))

    def _check_owned(self, owner: str) -> None:
        if not self.owns(owner):
            raise RuntimeError(f"PEP of {owner} is written on peer "
                               f"{self.api.owner_worker(owner)}, not here")

    async def retract_as_owner(self, owner: str, node: str, ids: list[str]) -> None:
        self._check_owned(owner)
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
            if self.split:  # the others see its interests; they hold other owners' nodes
                self.api.share(session, f"{time.time_ns()} " + " ".join(
                    sorted(f for f in features if f.endswith("+notify"))))
            self.api.spawn(self.last_items_for_local(session, features))

        features = self.caps.lookup(domain, str(session.jid), caps, known)
        if features is not None:
            known(features)

    async def roster_items(self, owner: JID) -> tuple[Any, ...]:
        """The rows of ``owner``'s roster (none when the roster module is disabled)."""
        rosters = self.api.service("roster")
        return () if rosters is None else (await rosters.get(owner)).items

    async def last_items_for_local(self, session: Any, features: frozenset[str]) -> None:
        """Last items of the account's own nodes and of its contacts' (local) nodes (those
        this worker owns)."""
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
            if self.owns(owner):
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

    def contact_presence_full(self, stanza: Element, origin: Any, session: Any) -> bool | None:
        return self.contact_presence(stanza, origin)

    def contact_presence(self, stanza: Element, origin: Any) -> bool | None:
        """Remote contacts' capabilities, from the presence they send local accounts (with
        several workers, on the account's owner worker: the presence is handed there, and
        delivered from there)."""
        try:
            sender = JID(stanza.get("from", ""))
            target = JID(stanza.get("to", "")).bare
        except JIDError:
            return None
        if sender.domain in self.api.hosts or sender.resource is None:
            return None
        ptype = stanza.get("type")
        owner = str(target)
        worker = self.api.owner_worker(owner) if self.split else None
        if worker is not None and worker != self.api.peer and (
                ptype == "unavailable" or (ptype is None and caps_of(stanza) is not None)):
            self.api.forward(worker, stanza)
            return True
        if ptype == "unavailable":
            seen = self.remote.get(owner)
            if seen is not None:
                seen.pop(str(sender), None)
                if not seen:
                    del self.remote[owner]
            return None
        caps = caps_of(stanza) if ptype is None else None
        if caps is None:
            return None
        seen = self.remote.setdefault(owner, {})
        if seen.get(str(sender)) == caps[2]:
            return None
        seen[str(sender)] = caps[2]

        def known(features: frozenset[str]) -> None:
            self.api.spawn(self.send_last_items(owner, sender, features))

        features = self.caps.lookup(target.domain, str(sender), caps, known)
        if features is not None:
            known(features)
        return None

    def iq_response(self, stanza: Element, origin: Any) -> bool:
        if self.caps.response(stanza):
            return True
        worker = asker(stanza.get("id", "")) if self.split else None
        if worker is None or worker == self.api.peer or worker not in self.api.peers:
            return False
        # a remote entity's answer came over another worker's federation link
        self.api.forward(worker, stanza)
        return True

    def closed(self, session: Any, abrupt: bool) -> None:
        self.api.drop_state(session)

    async def account_deleting(self, jid: JID) -> None:
        if self.split:  # the other workers forget it in the nodes they own first
            await self.api.changed(str(jid), "account-deleted")
        await self.forget(str(jid))

    async def forget(self, bare: str, drop_index: bool = True) -> None:
        """``bare``'s account is being deleted: its subscriptions to the nodes this worker
        owns go (``drop_index``: then its subscription index) and its nodes are uncached."""
        await self.engine.forget_account(bare, self.owns if self.split else None, drop_index)
        self.remote.pop(bare, None)
        if self.owns(bare):
            self.engine.forget_owner(bare)  # its nodes go with its data
