"""XEP-0202: Entity Time of the server."""

from __future__ import annotations

from datetime import UTC, datetime

from xmppd.core.module import Module
from xmppd.core.moduleapi import ModuleAPI
from xmppd.xml.element import Element
from xmppd.xml.stanza import reply

TIME_NS = "urn:xmpp:time"


def entity_time(iq: Element, origin: object, payload: Element) -> Element:
    out = reply(iq)
    el = out.subelement("time", TIME_NS)
    el.subelement("tzo", text="Z")
    el.subelement("utc", text=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return out


class Time(Module):
    name = "time"
    workers_safe = True
    xeps = ("XEP-0202",)

    def load(self, api: ModuleAPI) -> None:
        api.iq_handler("get", TIME_NS, "time", entity_time)
        api.add_feature(TIME_NS)
