"""The XML stream's framing, shared by client, server and component streams (sans-IO):
the header we send, the checks on the header we receive, stream features and errors.

Nothing here does I/O: the asyncio shell (:mod:`xmppd.transport.stream`) and the
negotiation objects (:mod:`xmppd.c2s.negotiation`) both build their bytes from it.
"""

from __future__ import annotations

from xmppd.randompool import random_bytes
from xmppd.xml.element import Element, escape_attr, escape_text
from xmppd.xml.events import STREAM_NS, StreamOpen

STREAM_ERRORS_NS = "urn:ietf:params:xml:ns:xmpp-streams"


class StreamErrorCondition(Exception):
    """Raised by handlers to end the stream with an RFC 6120 §4.9 stream error."""

    def __init__(self, condition: str, text: str | None = None) -> None:
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text


def new_stream_id() -> str:
    """A fresh, unpredictable stream id (dialback keys use it): RFC 6120 §4.7.3 wants one
    per header, restarts included."""
    return random_bytes(8).hex()


def stream_header(
    default_ns: str, stream_id: str, from_: str | None, to: str | None = None,
    *, version: bool = True, **extra: str,
) -> bytes:
    """Our ``<stream:stream>`` opening tag, with the XML declaration."""
    if version and not extra and not to:  # c2s: the id is hex, only 'from' needs escaping
        text = f' id="{stream_id}" version="1.0" xml:lang="en"'
        if from_:
            text += f' from="{escape_attr(from_)}"'
    elif not version:  # XEP-0114: a component header has neither version nor lang
        text = f" from='{escape_attr(from_ or '')}' id='{stream_id}'"
    else:
        attrs = {"id": stream_id, "version": "1.0", "xml:lang": "en"}
        if from_:
            attrs["from"] = from_
        if to:
            attrs["to"] = to
        attrs.update(extra)
        text = "".join(f' {k}="{escape_attr(v)}"' for k, v in attrs.items())
    return (
        f"<?xml version='1.0'?><stream:stream xmlns='{default_ns}'"
        f" xmlns:stream='{STREAM_NS}'{text}>"
    ).encode()


def check_stream_header(header: StreamOpen, default_ns: str) -> str:
    """The checks every stream kind makes on a peer's header; returns its ``to`` domain
    (lower-cased, without a trailing dot; possibly empty)."""
    if header.name != "stream" or header.ns != STREAM_NS:
        raise StreamErrorCondition("invalid-namespace", "not an XMPP stream")
    if header.namespaces.get("") != default_ns:
        raise StreamErrorCondition(
            "invalid-namespace", f"the default namespace must be {default_ns}"
        )
    return header.attrs.get("to", "").lower().rstrip(".")


def features_bytes(features: Element) -> bytes:
    """``<stream:features>`` with the prefix every client expects."""
    inner = b"".join(k.to_bytes(None) for k in features.children if isinstance(k, Element))
    return b"<stream:features>" + inner + b"</stream:features>"


def stream_error_bytes(condition: str, text: str | None = None) -> bytes:
    """An RFC 6120 §4.9 ``<stream:error>``."""
    body = f"<{condition} xmlns='{STREAM_ERRORS_NS}'/>"
    if text:
        body += f"<text xmlns='{STREAM_ERRORS_NS}'>{escape_text(text)}</text>"
    return f"<stream:error>{body}</stream:error>".encode()
