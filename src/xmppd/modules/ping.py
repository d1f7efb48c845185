"""XEP-0199: XMPP Ping — the server answers pings addressed to it."""

from __future__ import annotations

from xmppd.core.moduleapi import ModuleAPI
from xmppd.xml.element import Element
from xmppd.xml.stanza import reply

NAME = "ping"
XEPS = ("XEP-0199",)
PING_NS = "urn:xmpp:ping"


def load(api: ModuleAPI) -> None:
    def pong(iq: Element, origin: object, payload: Element) -> Element:
        return reply(iq)

    api.iq_handler("get", PING_NS, "ping", pong)
    api.add_feature(PING_NS)
