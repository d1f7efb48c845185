"""RFC 6121 §8.5.2: where a message to a local bare JID goes.

The router fires ``message/bare`` for a message to an account's bare JID (and for a
``chat``/``normal`` message to a full JID with no session); this module picks the
resources (RFC 6121 leaves the choice to the server):

- ``chat``: every available resource with non-negative priority;
- ``normal`` and ``headline``: the available resources of the highest non-negative priority;
- ``groupchat``: ``service-unavailable`` (a bare JID is not a room);
- with no such resource, ``chat``/``normal`` messages fire ``message/offline`` (the offline
  module stores them); unhandled, they bounce with ``service-unavailable``; ``headline``
  and ``error`` are dropped;
- after delivering to the chosen resources it fires ``message/delivered`` (carbons copy the
  message to the account's other resources there).

"Available" and "priority" come from the presence module's ``presence`` service.  Without
it (presence disabled), every bound resource counts as available with priority 0: a
message to an online user is delivered, never stored while the user is connected.
"""

from __future__ import annotations

from typing import Any

from xmppd.core.module import Module
from xmppd.core.moduleapi import ModuleAPI
from xmppd.core.session import Session
from xmppd.jid import JID, JIDError
from xmppd.xml.element import Element

#: Module event: (stanza, origin) -- no resource takes the message; True if stored.
OFFLINE_EVENT = "message/offline"
#: Module event: (stanza, origin, sessions) -- delivered to those resources of the account.
DELIVERED_EVENT = "message/delivered"


def targets(sessions: list[Session], mtype: str, presence: Any) -> list[Session]:
    """The resources of one account that get a message of type ``mtype``."""
    if presence is None:
        return sessions if sessions and mtype != "groupchat" else []
    available = [s for s in sessions if presence.available(s) and presence.priority(s) >= 0]
    if mtype == "chat" or len(available) < 2:
        return available
    top = max(presence.priority(s) for s in available)
    return [s for s in available if presence.priority(s) == top]


class Message(Module):
    """Delivers messages to bare JIDs; fires ``message/offline`` when nobody takes one."""

    name = "message"
    workers_safe = True
    xeps = ("RFC 6121 §8.5",)

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        self.router = api.router
        api.declare(OFFLINE_EVENT)
        api.declare(DELIVERED_EVENT)
        # Last, so that modules that take a message first (carbons, archive) run before it.
        api.hook("message/bare", self.to_bare, priority=-100)

    def to_bare(self, stanza: Element, origin: Any) -> Any:
        router = self.router
        mtype = stanza.attrs.get("type", "normal")
        if mtype == "groupchat":
            router.bounce(stanza, "service-unavailable")
            return True
        try:
            bare = JID(stanza.attrs["to"]).bare if "to" in stanza.attrs else origin.jid.bare
        except (JIDError, AttributeError):
            router.bounce(stanza, "jid-malformed")
            return True
        chosen = targets(router.sessions.resources(bare), mtype, self.api.service("presence"))
        if chosen:
            for session in chosen:
                router.deliver(session, stanza)
            result = self.api.fire(DELIVERED_EVENT, stanza, origin, chosen)
            return True if result is True or result is False else _handled(result)
        if mtype in ("headline", "error"):
            return True
        return self.offline(stanza, origin)

    async def offline(self, stanza: Element, origin: Any) -> bool:
        if not await self.api.fire_async(OFFLINE_EVENT, stanza, origin):
            self.router.bounce(stanza, "service-unavailable")
        return True


async def _handled(pending: Any) -> bool:
    await pending
    return True
