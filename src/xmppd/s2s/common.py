"""What the inbound and outbound s2s streams share: namespaces, stanza (re)namespacing,
the redacted XML trace and the operator's log line per stream."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from xmppd.jid import JID, JIDError
from xmppd.s2s.dialback import DIALBACK_NS
from xmppd.xml.element import Element

log = logging.getLogger("xmppd.s2s")
#: The XML trace of s2s streams, at debug level, with secrets redacted (see :func:`redact`).
trace_log = logging.getLogger("xmppd.s2s.trace")

TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
#: XEP-0288: the stream feature a receiving server offers, and the element that asks for it.
BIDI_FEATURE_NS = "urn:xmpp:features:bidi"
BIDI_NS = "urn:xmpp:bidi"
#: Declared on every s2s stream header: the dialback elements are written ``db:``-prefixed.
DB_DECL = {"xmlns:db": DIALBACK_NS}


def renamespace(el: Element, old: str, new: str) -> Element:
    """A copy of ``el`` with every element in namespace ``old`` moved to ``new`` (stanzas
    change their default namespace between client, server and component streams)."""
    kids: list[Element | str] = [
        k if isinstance(k, str) else renamespace(k, old, new) for k in el.children
    ]
    return Element(el.name, new if el.ns == old else el.ns, dict(el.attrs), kids)


def stanza_bytes(stanza: Element) -> bytes:
    """Serialize a stanza into whatever default namespace the stream has: its own
    namespace (and that of its unqualified children) is left implicit."""
    return stanza.to_bytes(stanza.ns)


def domain_of(value: str | None) -> str | None:
    """The domain of a JID attribute, or None if absent or malformed."""
    if not value:
        return None
    try:
        return JID(value).domain
    except JIDError:
        return None


class NegotiationError(Exception):
    """An outbound stream could not be set up; ``condition`` is the stanza error to bounce."""

    def __init__(self, text: str, condition: str = "remote-server-not-found") -> None:
        super().__init__(text)
        self.condition = condition


# Dialback keys (the text of <db:result>/<db:verify>) and SASL payloads never reach the log.
_SECRET_TEXT = re.compile(
    rb"(<(?:db:)?(?:result|verify|auth|response|challenge|success)\b[^>]*(?<!/)>)[^<]+"
)


def redact(data: bytes) -> str:
    """``data`` for the debug trace: dialback keys and SASL payloads replaced by ``[redacted]``."""
    return _SECRET_TEXT.sub(rb"\1[redacted]", data).decode("utf-8", "replace")


def trace(direction: str, peer: Any, data: bytes) -> None:
    """One line of the s2s XML trace (``direction`` is "<<" for received, ">>" for sent)."""
    trace_log.debug("%s %s %s", peer, direction, redact(data))


def tls_version(transport: asyncio.BaseTransport | None) -> str:
    """The TLS version of a transport ("plaintext" without TLS)."""
    sslobj = transport.get_extra_info("ssl_object") if transport is not None else None
    return (sslobj.version() or "TLS") if sslobj is not None else "plaintext"


def log_failure(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("s2s task failed", exc_info=task.exception())


class Traced:
    """Mixin for the s2s stream classes: what they send goes to the debug trace."""

    def send_bytes(self, data: bytes) -> None:
        if trace_log.isEnabledFor(logging.DEBUG):
            trace(">>", self.peer, data)  # type: ignore[attr-defined]
        super().send_bytes(data)  # type: ignore[misc]

    def trace_in(self, el: Element, default_ns: str) -> None:
        if trace_log.isEnabledFor(logging.DEBUG):
            trace("<<", self.peer, el.to_bytes(default_ns))  # type: ignore[attr-defined]
