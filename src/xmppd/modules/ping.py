"""XEP-0199: XMPP Ping — the server answers pings addressed to it, and pings a client
addresses to its own account (no ``to``, or its own bare JID: RFC 6120 §10.3.3), which
clients such as profanity use as their keepalive.

A ping to *another* account's bare JID gets ``service-unavailable``, as one to an account
that does not exist would (RFC 6121 §8.5.1): answering for the account would tell anyone
which accounts exist, and a server-side answer says nothing about the user's presence
anyway.  A ping to a full JID goes to that resource, as any IQ does.
"""

from __future__ import annotations

from xmppd.core.module import Module
from xmppd.core.moduleapi import ModuleAPI
from xmppd.xml.element import Element
from xmppd.xml.stanza import StanzaError, own_account, reply

PING_NS = "urn:xmpp:ping"


def pong(iq: Element, origin: object, payload: Element) -> Element:
    return reply(iq)


def account_pong(iq: Element, origin: object, payload: Element) -> Element:
    """Answer for the account only to the account itself."""
    try:
        own_account(iq, origin)
    except StanzaError:
        raise StanzaError("service-unavailable") from None
    return reply(iq)


class Ping(Module):
    name = "ping"
    workers_safe = True
    xeps = ("XEP-0199",)

    def load(self, api: ModuleAPI) -> None:
        api.iq_handler("get", PING_NS, "ping", pong)
        api.iq_handler("get", PING_NS, "ping", account_pong, to="bare")
        api.add_feature(PING_NS)
