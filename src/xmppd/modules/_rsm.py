"""XEP-0059 Result Set Management: read a request's ``<set/>``, write a page's ``<set/>``."""

from __future__ import annotations

from dataclasses import dataclass

from xmppd.xml.element import Element
from xmppd.xml.stanza import StanzaError

RSM_NS = "http://jabber.org/protocol/rsm"


@dataclass(frozen=True)
class Request:
    """What a client asked for: ``max`` (None: not given), ``after``, ``before`` (``""``
    means "the last page"), ``index``."""

    max: int | None = None
    after: str | None = None
    before: str | None = None
    index: int | None = None


def _number(el: Element, name: str) -> int | None:
    text = el.findtext(name, RSM_NS)
    if text is None:
        return None
    try:
        value = int(text.strip())
    except ValueError:
        raise StanzaError("bad-request", f"RSM <{name}/> is not a number") from None
    if value < 0:
        raise StanzaError("bad-request", f"RSM <{name}/> is negative")
    return value


def parse(parent: Element) -> Request:
    """The ``<set/>`` of ``parent`` (a default request when there is none)."""
    rsm = parent.find("set", RSM_NS)
    if rsm is None:
        return Request()
    after = rsm.find("after", RSM_NS)
    before = rsm.find("before", RSM_NS)
    if after is not None and not after.text:
        raise StanzaError("bad-request", "RSM <after/> needs an id")
    if after is not None and before is not None and before.text:
        raise StanzaError("bad-request", "RSM <after/> and <before/> together")
    return Request(
        max=_number(rsm, "max"),
        after=after.text if after is not None else None,
        before=before.text if before is not None else None,
        index=_number(rsm, "index"),
    )


def result(first: str | None, last: str | None, count: int | None,
           first_index: int | None = None) -> Element:
    """The ``<set/>`` describing a page (``first``/``last`` only when it holds items)."""
    out = Element("set", RSM_NS, {}, [])
    if first is not None:
        el = out.subelement("first", RSM_NS, text=first)
        if first_index is not None:
            el.attrs["index"] = str(first_index)
        out.subelement("last", RSM_NS, text=last)
    if count is not None:
        out.subelement("count", RSM_NS, text=str(count))
    return out
