"""XEP-0092: Software Version of the server (the OS is not disclosed)."""

from __future__ import annotations

from xmppd import __version__
from xmppd.core.module import Module
from xmppd.core.moduleapi import ModuleAPI
from xmppd.xml.element import Element
from xmppd.xml.stanza import reply

VERSION_NS = "jabber:iq:version"


def version(iq: Element, origin: object, payload: Element) -> Element:
    out = reply(iq)
    query = out.subelement("query", VERSION_NS)
    query.subelement("name", text="xmppd")
    query.subelement("version", text=__version__)
    return out


class Version(Module):
    name = "version"
    workers_safe = True
    xeps = ("XEP-0092",)

    def load(self, api: ModuleAPI) -> None:
        api.iq_handler("get", VERSION_NS, "query", version)
        api.add_feature(VERSION_NS)
