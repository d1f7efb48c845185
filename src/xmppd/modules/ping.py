"""XEP-0199: XMPP Ping — the server answers pings addressed to it."""

from __future__ import annotations

from xmppd.core.module import Module
from xmppd.core.moduleapi import ModuleAPI
from xmppd.xml.element import Element
from xmppd.xml.stanza import reply

PING_NS = "urn:xmpp:ping"


def pong(iq: Element, origin: object, payload: Element) -> Element:
    return reply(iq)


class Ping(Module):
    name = "ping"
    xeps = ("XEP-0199",)

    def load(self, api: ModuleAPI) -> None:
        api.iq_handler("get", PING_NS, "ping", pong)
        api.add_feature(PING_NS)
